"""The ways users run a pipeline on a cluster: `eventray run --address` and `ray job submit`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from cluster.control.node_environment import NODE_ENVIRONMENT
from tests.integration.ray_cluster import LocalRayCluster, session_token
from tests.reference import read_jsonl_dir

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@contextmanager
def _sigint_as_from_a_terminal() -> Iterator[None]:
    """Children started inside get SIGINT as from a terminal. A test session started in the background (nohup,
    `&`) has SIGINT ignored, children inherit that, and a program started with SIGINT ignored rightly keeps
    ignoring it; a handled signal is reset to its default across exec, so handling it here un-ignores it."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("RAY_ADDRESS", None)
    return env


def test_eventray_run_against_a_ray_start_cluster(ray_cluster: LocalRayCluster, tmp_path: Path) -> None:
    """With the cluster's token (token auth is on), which then shows nowhere: output, Ray's logs, dashboard."""
    result = subprocess.run(
        [str(BIN / "eventray"), "run", str(REPO / "configs" / "orders.yaml"),
         "--address", ray_cluster.address, "--max-events", "40000"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "orders finished" in result.stdout
    assert "40,000" in result.stdout
    windows = read_jsonl_dir(tmp_path / "out" / "orders" / "windows")
    assert windows, "no window results were written"
    assert sum(row["orders"] for row in windows) > 15_000
    dead = read_jsonl_dir(tmp_path / "out" / "orders" / "dead_letter")
    assert dead and all(row["reason"] for row in dead)
    token = session_token()
    assert token and token not in result.stdout + result.stderr
    assert ray_cluster.places_holding(token.encode()) == []
    assert ray_cluster.places_holding(b"orders-"), "the places searched do show this run (its actors' names)"


def test_ray_job_submit_runs_the_orders_module(ray_cluster: LocalRayCluster) -> None:
    result = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", ray_cluster.dashboard_url,
         "--working-dir", str(REPO), "--runtime-env-json", json.dumps({"excludes": [".venv", "out", ".eventray"]}),
         "--", "python", "-m", "cluster.examples.orders", "--max-events", "30000"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "orders finished" in output
    assert "30,000" in output
    assert "succeeded" in output.lower()


def test_ctrl_c_finishes_in_flight_batches_and_exits_0(tmp_path: Path) -> None:
    """An unbounded run on the embedded default, interrupted as a person would, with SIGINT. The embedded Ray's
    processes, the Supervisor's among them, run with eventray's node environment (two malloc arenas)."""
    env = {name: value for name, value in _env().items() if name not in NODE_ENVIRONMENT}
    with _sigint_as_from_a_terminal():
        process = subprocess.Popen(
            [str(BIN / "eventray"), "run", str(REPO / "configs" / "orders.yaml"), "--duration-s", "0"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:  # the first progress line: actors are up and reading
            lines.append(line)
            if " in " in line and "/s)" in line:
                break
        ray_processes = psutil.Process(process.pid).children(recursive=True)
        supervisors = [p for p in ray_processes if "Supervisor" in " ".join(p.cmdline())]
        assert len(supervisors) == 1, [p.cmdline() for p in ray_processes]
        assert NODE_ENVIRONMENT.items() <= supervisors[0].environ().items()
        time.sleep(2)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    output = "".join(lines) + output
    assert process.returncode == 0, output
    assert "stopped by Ctrl-C after finishing in-flight batches" in output
    windows = read_jsonl_dir(tmp_path / "out" / "orders" / "windows")
    assert windows, "windows open at Ctrl-C are emitted, not lost"
