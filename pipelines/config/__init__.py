"""The config models a pipeline is written in (pipeline, Kafka, state, dead letters, autoscaling), its secrets."""
