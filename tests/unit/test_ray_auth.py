"""The Ray auth environment eventray prepares before Ray starts (``cluster/control/ray_auth.py``); no Ray is started."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from cluster.control.ray_auth import prepare_ray_auth, token_source
from pipelines.errors import ConfigError


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_token_mode_is_the_default_and_is_written_back_for_child_processes(home: Path) -> None:
    environ: dict[str, str] = {}
    assert prepare_ray_auth(environ, embedded=True) == "token"
    assert environ["RAY_AUTH_MODE"] == "token"


def test_an_embedded_run_without_any_token_gets_a_private_one_in_rays_default_file(home: Path) -> None:
    prepare_ray_auth({}, embedded=True)
    token_file = home / ".ray" / "auth_token"
    assert len(token_file.read_text(encoding="utf-8")) == 64
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    before = token_file.read_text(encoding="utf-8")
    prepare_ray_auth({}, embedded=True)
    assert token_file.read_text(encoding="utf-8") == before, "an existing token is kept"


def test_joining_without_any_token_fails_naming_what_to_set(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"no token. Operator action: set RAY_AUTH_TOKEN_PATH to the cluster's token"):
        prepare_ray_auth({}, embedded=False)
    assert not (home / ".ray" / "auth_token").exists(), "a joining process never makes a token up"


def test_a_token_path_to_a_missing_or_empty_file_fails_naming_the_path(home: Path) -> None:
    empty = home / "empty"
    empty.write_text("\n", encoding="utf-8")
    for path in (home / "missing", empty):
        with pytest.raises(ConfigError, match=rf"RAY_AUTH_TOKEN_PATH={path}: no token there"):
            prepare_ray_auth({"RAY_AUTH_TOKEN_PATH": str(path)}, embedded=True)


def test_a_token_in_the_environment_or_a_named_file_is_used_as_it_is(home: Path) -> None:
    named = home / "cluster_token"
    named.write_text("abc", encoding="utf-8")
    assert prepare_ray_auth({"RAY_AUTH_TOKEN_PATH": str(named)}, embedded=False) == "token"
    assert prepare_ray_auth({"RAY_AUTH_TOKEN": "abc"}, embedded=False) == "token"
    assert not (home / ".ray").exists()


def test_disabled_is_kept_when_the_user_says_so_and_needs_no_token(home: Path) -> None:
    environ = {"RAY_AUTH_MODE": "disabled"}
    assert prepare_ray_auth(environ, embedded=False) == "disabled"
    assert environ == {"RAY_AUTH_MODE": "disabled"}


def test_an_unknown_mode_fails_naming_the_choices(home: Path) -> None:
    with pytest.raises(ConfigError, match=r"RAY_AUTH_MODE='tokens' is not a Ray auth mode: use one of token, disabled"):
        prepare_ray_auth({"RAY_AUTH_MODE": "tokens"}, embedded=True)


def test_the_token_source_names_where_the_token_is_never_the_token(home: Path) -> None:
    assert token_source({"RAY_AUTH_TOKEN": "s3cr3t"}) == "$RAY_AUTH_TOKEN"
    assert token_source({"RAY_AUTH_TOKEN_PATH": "/run/token"}) == "RAY_AUTH_TOKEN_PATH=/run/token"
    assert token_source({}) == str(home / ".ray" / "auth_token")
