"""The orders pipeline: revenue and order count per customer per 10 s tumbling window (event time).

Runnable on any Ray: ``python -m pipelines.orders [--config configs/orders.yaml] [--max-events N]``; inside
``ray job submit`` it joins the job's cluster. The pipeline itself is the config file; :func:`orders_pipeline`
loads it, so the YAML and the Python entry point cannot drift.
"""

from __future__ import annotations

import argparse
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
    parser = argparse.ArgumentParser(prog="python -m pipelines.orders", description=__doc__)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--max-events", type=int, default=None)
    parser.add_argument("--duration-s", type=float, default=None)
    parser.add_argument("--address", default=None, help="Ray address; default: the job's cluster, else embedded")
    args = parser.parse_args(argv)
    # The one place pipelines/ reaches into cluster/: this is an executable entry point, not library code.
    from cluster.cli import main as eventray_main  # noqa: PLC0415

    command = ["run", args.config, "--quiet"]
    if args.max_events is not None:
        command += ["--max-events", str(args.max_events)]
    if args.duration_s is not None:
        command += ["--duration-s", str(args.duration_s)]
    if args.address is not None:
        command += ["--address", args.address]
    return eventray_main(command)


if __name__ == "__main__":
    sys.exit(main())
