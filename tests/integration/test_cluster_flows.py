"""The ways users run a pipeline on a cluster: `eventray run --address` and `ray job submit`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.ray_cluster import LocalRayCluster
from tests.reference import read_jsonl_dir

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("RAY_ADDRESS", None)
    return env


def test_eventray_run_against_a_ray_start_cluster(ray_cluster: LocalRayCluster, tmp_path: Path) -> None:
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


def test_ray_job_submit_runs_the_orders_module(ray_cluster: LocalRayCluster) -> None:
    result = subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", ray_cluster.dashboard_url,
         "--working-dir", str(REPO), "--runtime-env-json", json.dumps({"excludes": [".venv", "out", ".eventray"]}),
         "--", "python", "-m", "pipelines.orders", "--max-events", "30000"],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "orders finished" in output
    assert "30,000" in output
    assert "succeeded" in output.lower()
