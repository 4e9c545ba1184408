"""The entry point of a pipeline run as a Ray job: ``python -m cluster.job --config configs/X.yaml``.

Inside ``ray job submit`` (or a KubeRay RayJob) it joins the job's cluster; elsewhere it starts an embedded Ray.
Example pipelines with a module of their own (``python -m cluster.examples.orders``) take the same options.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cluster.cli import main as eventray_main

__all__ = ["job_arguments", "main"]


def job_arguments(argv: Sequence[str] | None, default_config: str | None = None) -> list[str]:
    """``eventray run`` arguments for a job's ``--config/--max-events/--duration-s/--address/--secrets`` options."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=default_config, required=default_config is None)
    parser.add_argument("--max-events", type=int, default=None)
    parser.add_argument("--duration-s", type=float, default=None)
    parser.add_argument("--address", default=None, help="Ray address; default: the job's cluster, else embedded")
    parser.add_argument(
        "--secrets",
        choices=("driver", "environment"),
        default=None,
        help="runtime.secrets: environment keeps secrets out of Ray, each actor reading its own pod's (KubeRay)",
    )
    args = parser.parse_args(argv)
    command = ["run", args.config, "--quiet"]
    if args.secrets is not None:
        command += ["--set", f"runtime.secrets={args.secrets}"]
    if args.max_events is not None:
        command += ["--max-events", str(args.max_events)]
    if args.duration_s is not None:
        command += ["--duration-s", str(args.duration_s)]
    if args.address is not None:
        command += ["--address", args.address]
    return command


def main(argv: Sequence[str] | None = None) -> int:
    return eventray_main(job_arguments(argv))


if __name__ == "__main__":
    sys.exit(main())
