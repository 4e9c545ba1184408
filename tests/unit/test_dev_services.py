"""The plumbing shared by the dev Kafka broker and the dev schema registry (cluster.dev_services), with Python
processes standing in for the JVMs and a test error class standing in for DevBrokerError / DevRegistryError."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import BaseModel

from cluster.dev_services import (
    NotAnswering,
    PidAndRecordFiles,
    ServiceErrors,
    bound_loopback_socket,
    command_line,
    config_from_args,
    display_path,
    free_loopback_port,
    read_log_tail,
    require_tool,
    run_tool,
    start_recorded,
    stop_recorded,
    terminate_recognised,
    wait_until_answering,
)


class StandInError(Exception):
    """What a service's own error class is to the shared plumbing: built from the message alone."""


ERRORS = ServiceErrors(noun="stand-in service", error=StandInError)
SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@dataclass(frozen=True)
class StandInRecord:
    address: str
    pid: int


def _files(tmp_path: Path) -> PidAndRecordFiles[StandInRecord]:
    return PidAndRecordFiles(tmp_path / "service.pid", tmp_path / "service.json", StandInRecord)


def _reaped(pid: int) -> bool:
    """True once child ``pid`` has been reaped (by the code under test); reaps it here if it is a zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.fixture
def children() -> Iterator[list[int]]:
    """Pids of children a test spawned; any not yet reaped afterwards is killed and reaped (a reaped pid may
    belong to someone else by then, so it is left alone)."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue  # reaped already
        if waited == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)


# --- state files ----------------------------------------------------------------------------------------


def test_pid_and_record_round_trip_and_garbage_reads_as_none(tmp_path: Path) -> None:
    files = _files(tmp_path)
    files.write_pid(42)
    files.write_record(StandInRecord("127.0.0.1:1", 42))

    assert files.read_pid() == 42
    assert files.read_record() == StandInRecord("127.0.0.1:1", 42)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["service.json", "service.pid"]  # no temp file left
    files.pid_file.write_text("0\n")
    files.record_file.write_text('{"address": "x"}')
    assert files.read_pid() is None
    assert files.read_record() is None
    files.forget()
    files.forget()  # missing files are fine
    assert list(tmp_path.iterdir()) == []


# --- tools, ports, logs: errors are the service's own ------------------------------------------------


def test_a_missing_tool_raises_the_services_error_naming_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(StandInError) as raised:
        require_tool("mvn", ERRORS)

    assert str(raised.value).splitlines() == [
        "`mvn` was not found on PATH; the dev stand-in service needs it.",
        "Operator action: install Apache Maven 3.8+ (e.g. `apt-get install maven`) so `mvn` is on PATH.",
    ]


def test_a_tool_on_path_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tool = tmp_path / "java"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert require_tool("java", ERRORS) == tool


def test_a_tool_over_its_time_is_the_services_error_without_its_command_line() -> None:
    with pytest.raises(StandInError) as raised:
        run_tool([*SLEEPER[:2], "import time; time.sleep(5)", "s3cret"], 0.2, "Sleeping", ERRORS)
    assert "s3cret" not in str(raised.value)
    assert raised.value.__cause__ is None
    assert str(raised.value).startswith("Sleeping took over 0 s.\nOperator action:")


def test_a_taken_port_is_the_services_error_with_its_operator_action() -> None:
    with bound_loopback_socket(0, ERRORS, "unused") as taken:
        port = taken.getsockname()[1]
        taken.listen()
        with pytest.raises(StandInError, match=rf"(?s)Port {port} on 127\.0\.0\.1 is already in use.*"):
            free_loopback_port(port, ERRORS, "pick another port.")
        with pytest.raises(StandInError) as raised:
            bound_loopback_socket(port, ERRORS, "pick another port.")
    assert str(raised.value).splitlines()[-1] == "Operator action: pick another port."


def test_sockets_held_together_get_distinct_free_ports() -> None:
    with bound_loopback_socket(0, ERRORS, "") as first, bound_loopback_socket(0, ERRORS, "") as second:
        assert first.getsockname()[1] != second.getsockname()[1]
    assert free_loopback_port(0, ERRORS, "") > 0


def test_log_tail_is_the_last_non_empty_lines(tmp_path: Path) -> None:
    log = tmp_path / "service.log"
    log.write_text("one\n\ntwo\nthree\n")
    assert read_log_tail(log, 2) == "two\nthree"
    assert read_log_tail(tmp_path / "missing.log") == "(no log written)"


# --- processes: spawned, recognised, stopped -------------------------------------------------------------


def test_command_line_of_a_live_and_a_dead_pid(tmp_path: Path, children: list[int]) -> None:
    pid = start_recorded(SLEEPER, tmp_path / "service.log", _files(tmp_path), lambda pid: None, 1.0)
    children.append(pid)
    _wait_until_sleeper(pid)
    assert command_line(pid) == SLEEPER
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert command_line(dead.pid) == []


def test_an_unrecognised_pid_is_never_signalled() -> None:
    process = subprocess.Popen(SLEEPER)
    try:
        assert terminate_recognised(process.pid, lambda pid: False, 1.0, ERRORS) is False
        assert process.poll() is None
    finally:
        process.kill()
        process.wait()


@pytest.mark.parametrize("hard", [False, True])
def test_a_recognised_child_is_stopped_and_reaped(tmp_path: Path, children: list[int], hard: bool) -> None:
    files = _files(tmp_path)
    pid = start_recorded(SLEEPER, tmp_path / "service.log", files, lambda pid: None, 5.0)
    children.append(pid)
    _wait_until_sleeper(pid)

    assert files.read_pid() == pid
    assert stop_recorded(files, _is_sleeper, 5.0, ERRORS, hard=hard)
    assert _reaped(pid)
    assert files.read_pid() is None


def test_a_failed_readiness_check_stops_the_child_and_forgets_it(tmp_path: Path, children: list[int]) -> None:
    files = _files(tmp_path)
    spawned: list[int] = []

    def never_ready(pid: int) -> None:
        spawned.append(pid)
        raise StandInError("not ready.\nOperator action: none")

    with pytest.raises(StandInError, match="not ready"):
        start_recorded(SLEEPER, tmp_path / "service.log", files, never_ready, 5.0)
    children.extend(spawned)
    assert _reaped(spawned[0])
    assert not files.pid_file.exists()


def test_waiting_reports_an_exit_with_its_code_and_leaves_the_child_unreaped(
    tmp_path: Path, children: list[int]
) -> None:
    files = _files(tmp_path)
    argv = [sys.executable, "-c", "import sys; print('boom', flush=True); sys.exit(3)"]
    pid = start_recorded(argv, tmp_path / "service.log", files, lambda pid: None, 1.0)
    children.append(pid)

    assert wait_until_answering(pid, lambda probe_s: False, 30.0, poll_s=0.05, probe_timeout_s=1.0) == NotAnswering(3)
    assert os.waitpid(pid, os.WNOHANG)[0] == pid  # still ours to reap
    assert "boom" in read_log_tail(tmp_path / "service.log")


def test_waiting_ends_when_the_service_answers_or_at_the_deadline(tmp_path: Path, children: list[int]) -> None:
    pid = start_recorded(SLEEPER, tmp_path / "service.log", _files(tmp_path), lambda pid: None, 1.0)
    children.append(pid)
    probes: list[float] = []

    def answers_second_time(probe_s: float) -> bool:
        probes.append(probe_s)
        return len(probes) == 2

    assert wait_until_answering(pid, answers_second_time, 30.0, poll_s=0.01, probe_timeout_s=3.0) is None
    assert probes == [3.0, 3.0]
    assert wait_until_answering(pid, lambda probe_s: False, 0.2, poll_s=0.05, probe_timeout_s=3.0) == NotAnswering(None)


def _is_sleeper(pid: int) -> bool:
    return command_line(pid) == SLEEPER


def _wait_until_sleeper(pid: int) -> None:
    """Right after spawn the kernel may still show an empty command line; wait until it is set."""
    deadline = time.monotonic() + 10
    while not _is_sleeper(pid) and time.monotonic() < deadline:
        time.sleep(0.01)


# --- terminal commands -----------------------------------------------------------------------------------


class StandInConfig(BaseModel):
    state_dir: Path = Path("default")
    port: int = 0


def test_config_from_args_puts_the_state_dir_on_top_only_when_given(tmp_path: Path) -> None:
    assert config_from_args(StandInConfig, argparse.Namespace(state_dir=None), port=1) == StandInConfig(port=1)
    given = config_from_args(StandInConfig, argparse.Namespace(state_dir=tmp_path))
    assert given.state_dir == tmp_path


def test_display_path_is_relative_inside_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert display_path(tmp_path / "state" / "x.log") == str(Path("state") / "x.log")
    assert display_path(Path("/elsewhere/x.log")) == "/elsewhere/x.log"
