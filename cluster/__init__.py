"""How the cluster runs pipelines: Ray connection, Supervisor, assignment, CLI."""
