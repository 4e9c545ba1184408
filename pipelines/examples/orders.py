"""The orders pipeline: revenue and order count per customer per 10 s tumbling window (event time).

The pipeline itself is the config file; :func:`orders_pipeline` loads it (tests and benchmarks use it), so the YAML
and the code cannot drift. It runs with ``python -m cluster.examples.orders`` (:mod:`cluster.examples.orders`).
"""

from __future__ import annotations

from pathlib import Path

from pipelines.config.pipeline import PipelineConfig, load_config

__all__ = ["DEFAULT_CONFIG", "orders_pipeline"]

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "orders.yaml"


def orders_pipeline(config_path: str | Path = DEFAULT_CONFIG, **overrides: object) -> PipelineConfig:
    """The orders pipeline config; ``overrides`` map dotted paths (``runtime__max_events``) to values."""
    return load_config(config_path, {key.replace("__", "."): value for key, value in overrides.items()})
