"""Kafka I/O of the actors: a partition-assigned consumer, producer sinks, and admin calls."""
