"""A local Ray cluster for the test session, started with ``ray start --head --block`` and stopped by its pid.

One cluster serves the whole session: the pytest process joins it as a driver, the CLI and ``ray job submit``
tests use it as users would. It runs in the session's auth mode (``tests/session_auth.py``): token auth, so its
dashboard is asked with the session's token (:meth:`LocalRayCluster.dashboard_get`). ``--block`` keeps the head's
launcher in the foreground, so stopping that one process (SIGTERM, then SIGKILL of its own process group) stops
exactly what this session started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from cluster.control.node_environment import node_environment

__all__ = ["LocalRayCluster", "free_port", "session_token", "start_local_cluster"]

_READY_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LocalRayCluster:
    address: str
    dashboard_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    metrics_url: str
    temp_dir: Path  # Ray's session files and logs are under <temp_dir>/session_latest

    def dashboard_get(self, path: str, token: str | None = None) -> bytes:
        """GET ``path`` from the dashboard with ``token`` (default: the session's, when token auth is on)."""
        token = session_token() if token is None else token
        request = urllib.request.Request(self.dashboard_url + path)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            body: bytes = response.read()
            return body

    def places_holding(self, secret: bytes) -> list[str]:
        """Where ``secret`` shows: Ray's session logs, and the dashboard's views of actors, tasks and jobs."""
        places = [
            str(path)
            for path in (self.temp_dir / "session_latest" / "logs").rglob("*")
            if path.is_file() and secret in path.read_bytes()
        ]
        views = ("/api/v0/actors?detail=true&limit=10000", "/api/v0/tasks?detail=true&limit=10000", "/api/jobs/")
        return places + [view for view in views if secret in self.dashboard_get(view)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def session_token() -> str:
    """The session's Ray token, or "" with auth disabled (``RAY_AUTH_TOKEN`` first, as Ray reads it)."""
    if os.environ.get("RAY_AUTH_MODE", "token") != "token":
        return ""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    return Path(os.environ["RAY_AUTH_TOKEN_PATH"]).read_text(encoding="utf-8").strip()


def _ray_bin() -> str:
    return str(Path(sys.executable).with_name("ray"))


def start_local_cluster(log_dir: Path, num_cpus: int = 4) -> LocalRayCluster:
    port, dashboard_port, metrics_port = free_port(), free_port(), free_port()
    log_path = log_dir / "ray-start.log"
    # its own temp dir: `ray start` records itself in <temp>/ray_current_cluster, which a bare
    # ray.init() elsewhere on the machine would otherwise join (or fail to, once this cluster is gone)
    # (short: Ray's unix socket paths under it must stay within 107 bytes)
    temp_dir = Path(tempfile.mkdtemp(prefix="er-ray-", dir="/tmp"))
    command = [
        _ray_bin(), "start", "--head", "--block",
        f"--port={port}", "--node-ip-address=127.0.0.1",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", "--include-dashboard=true",
        f"--num-cpus={num_cpus}", "--disable-usage-stats", f"--metrics-export-port={metrics_port}",
        f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    # As after `source .venv/bin/activate`: a job's `python` entrypoint is the venv's, as is every worker.
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("RAY_ADDRESS", None)
    env["RAY_metrics_report_interval_ms"] = "1000"  # metrics reach the endpoint within a second or two
    env.update(node_environment(env))  # as eventray's embedded Ray and its pods have it
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    cluster = LocalRayCluster(
        f"127.0.0.1:{port}", f"http://127.0.0.1:{dashboard_port}", process, log_path, f"http://127.0.0.1:{metrics_port}",
        temp_dir,
    )  # fmt: skip
    _wait_until_ready(cluster)
    return cluster


def _wait_until_ready(cluster: LocalRayCluster) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if cluster.process.poll() is not None:
            raise RuntimeError(f"ray start exited early:\n{cluster.log_path.read_text()[-3000:]}")
        status = subprocess.run(
            [_ray_bin(), "status", f"--address={cluster.address}"],
            capture_output=True,
            check=False,
            timeout=60,
        )
        if status.returncode == 0 and _dashboard_answers(cluster):
            return
        time.sleep(1)
    cluster.stop()
    raise RuntimeError(
        f"ray start did not become ready in {_READY_TIMEOUT_S} s:\n{cluster.log_path.read_text()[-3000:]}"
    )


def _dashboard_answers(cluster: LocalRayCluster) -> bool:
    try:
        cluster.dashboard_get("/api/version")
    except OSError:
        return False
    return True
