"""The orders pipeline: revenue and order count per customer per 10 s tumbling window (event time).

Runnable on any Ray: ``python -m pipelines.orders [--config configs/orders.yaml] [--max-events N]``; inside
``ray job submit`` it joins the job's cluster. The pipeline itself is the config file; :func:`orders_pipeline`
loads it, so the YAML and the Python entry point cannot drift.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pipelines.config import PipelineConfig, load_config

__all__ = ["DEFAULT_CONFIG", "main", "orders_pipeline"]

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "orders.yaml"


def orders_pipeline(config_path: str | Path = DEFAULT_CONFIG, **overrides: object) -> PipelineConfig:
    """The orders pipeline config; ``overrides`` map dotted paths (``runtime__max_events``) to values."""
    return load_config(config_path, {key.replace("__", "."): value for key, value in overrides.items()})


def main(argv: Sequence[str] | None = None) -> int:
    # The one place pipelines/ reaches into cluster/: an executable entry point, not library code.
    from cluster.cli import main as eventray_main  # noqa: PLC0415
    from cluster.job import job_arguments  # noqa: PLC0415

    return eventray_main(job_arguments(argv, default_config=str(DEFAULT_CONFIG)))


if __name__ == "__main__":
    sys.exit(main())
