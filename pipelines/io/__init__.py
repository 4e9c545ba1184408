"""Records in and rows out: raw batches, sources (generator, files), sinks, Kafka records and ACLs, trace context."""
