"""A system's subprocess: ``python -m benchmarks.child SPEC.json REPORT.json``.

Runs one system on one workload (see :mod:`benchmarks.systems`) and writes its :class:`ChildReport`, also when
the system failed (``error`` then says why), so the driver always has something to record.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

from benchmarks.protocol import ChildReport, RunSpec
from benchmarks.systems import load_system


def main(argv: list[str]) -> int:
    spec_path, report_path = Path(argv[0]), Path(argv[1])
    spec = RunSpec.load(spec_path)
    report = ChildReport(system=spec.system, workload=spec.workload, started_s=time.time())
    try:
        load_system(spec.system).run(spec, report)
    except BaseException as error:  # noqa: BLE001 - recorded for the results table, then re-raised as exit 1
        report.error = f"{type(error).__name__}: {error}"
        report.extra["traceback"] = traceback.format_exc(limit=8)
        report.save(report_path)
        return 1
    report.save(report_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
