"""Example pipelines: their configs in ``configs/``, loaded as Python for tests and benchmarks."""
