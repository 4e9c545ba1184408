"""The systems under test, one module each, all with the same entry point::

    def run(spec: RunSpec, report: ChildReport) -> None

which runs ``spec.workload`` to its end in the current process (a subprocess of the driver) and fills in
``report``. Modules are imported lazily: each peer's import is heavy and only its own subprocess pays it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["NOT_RUN_REASONS", "SUPPORTED", "SYSTEMS", "load_system", "not_run_reason"]

SYSTEMS: dict[str, str] = {
    "eventray": "benchmarks.systems.eventray_system",
    "bare_getmany": "benchmarks.systems.bare_getmany",
    "handwritten": "benchmarks.systems.handwritten",
    "quix": "benchmarks.systems.quix_system",
    "faust": "benchmarks.systems.faust_system",
}

# W3 has no broker: the peers that only read Kafka cannot run it. bare_getmany's W3 counterpart is
# "generate only" (the ceiling), handwritten's is the same dict aggregation on the generator's payloads.
# W1D's invalid events must go somewhere: only eventray has a dead-letter output to send them to (and a bare
# getmany drain of the dirty topic would only measure W1's again).
SUPPORTED: dict[str, tuple[str, ...]] = {
    "W1": ("eventray", "bare_getmany", "handwritten", "quix", "faust"),
    "W1D": ("eventray",),
    "W2": ("eventray", "bare_getmany", "handwritten", "quix", "faust"),
    "W3": ("eventray", "bare_getmany", "handwritten"),
}
# What the results table says of a system a workload does not run, per workload.
NOT_RUN_REASONS: dict[str, str] = {
    "W1D": "no dead-letter path for invalid events",
    "W3": "needs a Kafka broker (W3 has none)",
}


def not_run_reason(workload: str, system: str) -> str | None:
    """Why ``system`` is not run on ``workload``, or None when it is (``workload`` must be in ``SUPPORTED``)."""
    if system in SUPPORTED[workload]:
        return None
    return NOT_RUN_REASONS[workload]


def load_system(name: str) -> ModuleType:
    return importlib.import_module(SYSTEMS[name])
