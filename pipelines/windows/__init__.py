"""Event-time windows (tumbling, hopping, sliding, session) and the aggregation plan they share."""
