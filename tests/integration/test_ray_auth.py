"""Ray token auth on the session's ``ray start`` cluster, which runs in token mode as users get it.

The dashboard's jobs API refuses a missing token (401) and a wrong one (403); ``eventray run --address`` with a
wrong token, or with auth disabled on its side, is refused at once with the cause named, not after Ray's join
retries. That ``eventray run --address`` works with the right token, and that the token shows nowhere, is in
``test_cluster_flows.py``.
"""

from __future__ import annotations

import os
import secrets
import stat
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest

from tests.integration.ray_cluster import LocalRayCluster, session_token

pytestmark = [pytest.mark.ray]

REPO = Path(__file__).resolve().parents[2]


def _status_of_jobs_api(cluster: LocalRayCluster, token: str) -> int:
    try:
        cluster.dashboard_get("/api/jobs/", token=token)
    except urllib.error.HTTPError as error:
        return error.code
    return 200


def test_the_jobs_api_answers_401_without_a_token_403_with_a_wrong_one_and_200_with_the_cluster_token(
    ray_cluster: LocalRayCluster,
) -> None:
    assert session_token(), "the session runs with token auth"
    assert _status_of_jobs_api(ray_cluster, token="") == 401
    assert _status_of_jobs_api(ray_cluster, token=secrets.token_hex(32)) == 403
    assert _status_of_jobs_api(ray_cluster, token=session_token()) == 200


def _eventray_run(
    cluster: LocalRayCluster | None, tmp_path: Path, unset: tuple[str, ...] = (), **environment: str
) -> subprocess.CompletedProcess[str]:
    """``eventray run`` of 1,000 orders on ``cluster`` (None: embedded), with ``environment`` and without ``unset``
    (and never with ``RAY_AUTH_TOKEN``, which would take precedence over a token file given here)."""
    env = {**os.environ, **environment}
    for name in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", *unset):
        env.pop(name, None)
    address = ["--address", cluster.address] if cluster is not None else []
    command = [sys.executable, "-m", "cluster.cli", "run", str(REPO / "configs" / "orders.yaml"), *address,
               "--max-events", "1000", "--quiet"]  # fmt: skip
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_with_the_auth_mode_unset_eventray_run_joins_with_its_token(
    ray_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    """Token mode is eventray's default, set before Ray starts in this process: the token is really sent."""
    result = _eventray_run(ray_cluster, tmp_path, unset=("RAY_AUTH_MODE",))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "orders finished" in result.stdout


def test_with_the_auth_mode_unset_an_embedded_run_makes_a_private_token_and_runs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    result = _eventray_run(None, tmp_path, unset=("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"), HOME=str(home))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "orders finished" in result.stdout
    token_file = home / ".ray" / "auth_token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and len(token_file.read_text(encoding="utf-8")) == 64


def test_a_wrong_token_is_refused_naming_where_it_came_from_not_what_it_is(
    ray_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    wrong = secrets.token_hex(32)
    token_file = tmp_path / "wrong_token"
    token_file.write_text(wrong, encoding="utf-8")

    result = _eventray_run(ray_cluster, tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"the Ray cluster at {ray_cluster.address} refused this process's token" in result.stderr
    assert f"RAY_AUTH_TOKEN_PATH={token_file}" in result.stderr
    assert "Traceback" not in result.stderr
    assert wrong not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists(), "nothing ran"


def test_auth_disabled_here_against_a_token_cluster_is_told_to_turn_it_on(
    ray_cluster: LocalRayCluster, tmp_path: Path
) -> None:
    result = _eventray_run(ray_cluster, tmp_path, RAY_AUTH_MODE="disabled")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "requires token authentication and RAY_AUTH_MODE=disabled here" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_address_where_no_cluster_listens_is_named(tmp_path: Path) -> None:
    from tests.integration.ray_cluster import free_port  # noqa: PLC0415

    address = f"127.0.0.1:{free_port()}"
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    command = [sys.executable, "-m", "cluster.cli", "run", str(REPO / "configs" / "orders.yaml"), "--address", address]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"no Ray cluster answers at {address}" in result.stderr
