"""The systems under test, one module each, all with the same entry point::

    def run(spec: RunSpec, report: ChildReport) -> None

which runs ``spec.workload`` to its end in the current process (a subprocess of the driver) and fills in
``report``. Modules are imported lazily: each peer's import is heavy and only its own subprocess pays it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["SUPPORTED", "SYSTEMS", "load_system"]

SYSTEMS: dict[str, str] = {
    "eventray": "benchmarks.systems.eventray_system",
    "bare_getmany": "benchmarks.systems.bare_getmany",
    "handwritten": "benchmarks.systems.handwritten",
    "quix": "benchmarks.systems.quix_system",
    "faust": "benchmarks.systems.faust_system",
}

# W3 has no broker: the peers that only read Kafka cannot run it. bare_getmany's W3 counterpart is
# "generate only" (the ceiling), handwritten's is the same dict aggregation on the generator's payloads.
SUPPORTED: dict[str, tuple[str, ...]] = {
    "W1": ("eventray", "bare_getmany", "handwritten", "quix", "faust"),
    "W2": ("eventray", "bare_getmany", "handwritten", "quix", "faust"),
    "W3": ("eventray", "bare_getmany", "handwritten"),
}


def load_system(name: str) -> ModuleType:
    return importlib.import_module(SYSTEMS[name])
