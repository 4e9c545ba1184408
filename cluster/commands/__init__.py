"""The `eventray` commands besides `run`: verify, lag, acls, dead-letters, produce, demo, and the live console."""
