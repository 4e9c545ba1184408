"""``python -m benchmarks.checkpoint_encryption``: what encryption at rest costs a checkpoint, on this machine.

A checkpoint of one aggregate actor writes its keyed state (here the partial windows of ``--keys`` customers,
as the orders pipeline holds them) and reads it back at recovery. This times
:meth:`~pipelines.state.checkpoint_store.CheckpointStore.write_table` and ``read_table`` of that table on a local disk
(fsync included), plain and with ``checkpoint.encryption`` (AES-256-GCM, a data key per file), interleaved in
every repetition so a load change falls on both alike; each figure is the median of the repetitions, and the
ratio is encrypted over plain. No broker, no Ray.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa

from pipelines.state.checkpoint_store import CheckpointStore

__all__ = ["main"]

KEY = bytes(range(32))


def keyed_state(keys: int) -> pa.Table:
    """Partial window aggregates of ``keys`` customers over 3 open windows, with their key groups."""
    rows = keys * 3
    customers = np.arange(rows) % keys
    return pa.table({
        "customer_id": pa.array([f"c{customer:07d}" for customer in customers]),
        "_window_start": pa.array(1_700_000_000_000 + (np.arange(rows) // keys) * 10_000, pa.int64()),
        "_key_group": pa.array(customers % 128, pa.int32()),
        "count(*)": pa.array(np.ones(rows, dtype=np.int64)),
        "sum(amount_cents)": pa.array(np.arange(rows, dtype=np.int64) * 7),
    })  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.checkpoint_encryption", description=__doc__)
    parser.add_argument("--keys", type=int, default=200_000, help="customers in the keyed state (3 windows each)")
    parser.add_argument("--repetitions", type=int, default=7)
    options = parser.parse_args(argv)
    state = keyed_state(options.keys)
    times: dict[str, dict[str, list[float]]] = {
        "plain": {"write": [], "read": []},
        "encrypted": {"write": [], "read": []},
    }
    load_before = os.getloadavg()[0]  # others' work on the machine, for reading the figures
    with tempfile.TemporaryDirectory(prefix="checkpoint-bench-") as root:
        stores = {"plain": CheckpointStore(root, "plain"), "encrypted": CheckpointStore(root, "encrypted", key=KEY)}
        for epoch in range(1, options.repetitions + 2):
            for name, store in stores.items():
                started = time.perf_counter()
                written = store.write_table(epoch, "state-aggregate-0", state)
                wrote = time.perf_counter()
                store.read_table(written)
                if epoch > 1:  # the first is a warm-up
                    times[name]["write"].append(wrote - started)
                    times[name]["read"].append(time.perf_counter() - wrote)
        size = {name: os.path.getsize(f"{root}/{name}/epoch-{2:06d}/state-aggregate-0.arrow") for name in stores}
    load_after = os.getloadavg()[0]
    print(f"Machine: {os.cpu_count()} cores; 1-minute load average {load_before:.2f} before, {load_after:.2f} after.")
    megabytes = {name: f"{bytes_ / 1e6:.1f} MB" for name, bytes_ in size.items()}
    print(f"Keyed state of {options.keys:,} keys x 3 windows ({state.num_rows:,} rows, {megabytes['plain']} plain, "
          f"{megabytes['encrypted']} encrypted); median of {options.repetitions} repetitions.")  # fmt: skip
    print()
    print("| step | plain ms | encrypted ms | encrypted / plain |")
    print("|---|---:|---:|---:|")
    for step in ("write", "read"):
        plain, encrypted = (statistics.median(times[name][step]) * 1000 for name in ("plain", "encrypted"))
        print(f"| {step} | {plain:.1f} | {encrypted:.1f} | {encrypted / plain:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
