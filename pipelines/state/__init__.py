"""Keyed state: the keyed-operator interface, upsert tables, dedup, process functions, key groups, checkpoint files."""
