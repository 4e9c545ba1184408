"""The orders pipeline as a Ray job: ``python -m cluster.examples.orders [--config configs/orders.yaml]
[--max-events N]``. Inside ``ray job submit`` (or a KubeRay RayJob) it joins the job's cluster; elsewhere it starts
an embedded Ray. It takes the options of :mod:`cluster.job`, with the orders config as the default."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cluster.cli import main as eventray_main
from cluster.job import job_arguments
from pipelines.examples.orders import DEFAULT_CONFIG

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    return eventray_main(job_arguments(argv, default_config=str(DEFAULT_CONFIG)))


if __name__ == "__main__":
    sys.exit(main())
