"""Schemas and the columnar decoders (JSON, Avro, raw), with input limits and the verdicts on dirty records."""
