"""The control plane: the Supervisor and what it runs (assignment, epochs, recovery, lag and autoscaling, the
watchdog), Ray options and handles, and the driver that starts it."""
