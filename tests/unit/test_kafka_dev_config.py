"""The dev broker's pure parts: config, rendered files, jar caching, pid identity, CLI messages.

No JVM and no network: processes standing in for a broker are Python interpreters started under the
name ``java``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import stat
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.kafka_dev import (
    DevBrokerConfig,
    DevBrokerError,
    bootstrap_from_env,
    broker_status,
    resolve_kafka_jars,
    start_broker,
    stop_broker,
)
from cluster.kafka_dev._jars import render_pom
from cluster.kafka_dev._properties import BrokerPorts, render_server_properties
from cluster.kafka_dev.cli import add_kafka_commands

POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def _properties(text: str) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value for key, value in pairs}


# --- config ---------------------------------------------------------------------------------------


def test_cache_dir_follows_eventray_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVENTRAY_CACHE_DIR", str(tmp_path / "cache"))
    assert DevBrokerConfig().cache_dir == tmp_path / "cache" / "kafka"


def test_default_cache_dir_is_under_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTRAY_CACHE_DIR", raising=False)
    assert DevBrokerConfig().cache_dir == (Path.home() / ".cache" / "eventray" / "kafka").resolve()


def test_state_dir_defaults_under_cwd_and_is_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert DevBrokerConfig().state_dir == tmp_path.resolve() / ".eventray" / "kafka"
    assert DevBrokerConfig(state_dir=Path("rel")).state_dir == tmp_path.resolve() / "rel"


def test_same_client_and_controller_port_is_rejected() -> None:
    with pytest.raises(ValueError, match="must differ"):
        DevBrokerConfig(port=9092, controller_port=9092)


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("  ", None), ("h:1", "h:1")])
def test_bootstrap_from_env(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: str | None) -> None:
    if value is None:
        monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    else:
        monkeypatch.setenv("KAFKA_BOOTSTRAP", value)
    assert bootstrap_from_env() == expected


def test_error_survives_pickling() -> None:
    error = DevBrokerError("broke.\nOperator action: fix it.")
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is DevBrokerError
    assert str(restored) == str(error)


# --- rendered files -------------------------------------------------------------------------------


def test_server_properties_listen_on_loopback_only(tmp_path: Path) -> None:
    props = _properties(render_server_properties(BrokerPorts(port=19092, controller=19093), tmp_path))

    endpoints = [*props["listeners"].split(","), props["advertised.listeners"]]
    assert [endpoint.split("://")[1] for endpoint in endpoints] == [
        "127.0.0.1:19092",
        "127.0.0.1:19093",
        "127.0.0.1:19092",
    ]
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path)
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["auto.create.topics.enable"] == "true"
    text = " ".join(props.values())
    assert "0.0.0.0" not in text
    assert "localhost" not in text


def test_a_broker_behind_a_proxy_listens_on_its_port_and_advertises_the_proxys(tmp_path: Path) -> None:
    ports = BrokerPorts(port=19092, controller=19093, advertised=19100)
    props = _properties(render_server_properties(ports, tmp_path))

    assert props["listeners"].split(",")[0] == "PLAINTEXT://127.0.0.1:19092"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19100"
    assert ports.bootstrap == "127.0.0.1:19092", "start_broker still probes the broker itself"
    with pytest.raises(ValueError, match="advertised_port is for a plaintext broker"):
        DevBrokerConfig(port=9092, advertised_port=9100, secure=True)


def test_pom_names_the_kafka_version_and_an_slf4j2_api() -> None:
    root = ET.fromstring(render_pom("4.1.1"))
    versions = {
        dep.findtext("m:artifactId", namespaces=POM_NS): dep.findtext("m:version", namespaces=POM_NS)
        for dep in root.iterfind("m:dependencies/m:dependency", POM_NS)
    }
    assert versions["kafka_2.13"] == "4.1.1"
    assert (versions["slf4j-api"] or "").startswith("2.")
    assert versions["log4j-slf4j2-impl"] == versions["log4j-core"]


# --- jar resolution, with stand-ins for java and mvn ---------------------------------------------------


def _write_script(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only a stand-in ``java``; tests add their own ``mvn``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _write_script(bin_dir / "java", "exit 0\n")
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_missing_java_is_an_operator_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevBrokerError, match=r"(?s)`java` was not found.*Operator action:"):
        resolve_kafka_jars(DevBrokerConfig(cache_dir=tmp_path / "cache"))


def test_missing_mvn_is_an_operator_error(fake_tools: Path, tmp_path: Path) -> None:
    with pytest.raises(DevBrokerError, match=r"(?s)`mvn` was not found.*Operator action:"):
        resolve_kafka_jars(DevBrokerConfig(cache_dir=tmp_path / "cache"))


def test_failing_mvn_reports_its_last_output(fake_tools: Path, tmp_path: Path) -> None:
    _write_script(fake_tools / "mvn", "echo '[ERROR] Could not resolve kafka_2.13'\nexit 1\n")
    with pytest.raises(DevBrokerError, match=r"(?s)Could not resolve kafka_2.13.*Operator action:"):
        resolve_kafka_jars(DevBrokerConfig(cache_dir=tmp_path / "cache"))
    assert not (tmp_path / "cache" / "kafka-4.1.1" / "libs").exists()


def _write_fake_mvn(bin_dir: Path, calls: Path) -> None:
    """An ``mvn`` that records each call in ``calls`` and "downloads" one empty jar."""
    _write_python_script(
        bin_dir / "mvn",
        f"with open({str(calls)!r}, 'a') as f:\n"
        "    f.write('call\\n')\n"
        "out = next(a.split('=', 1)[1] for a in sys.argv if a.startswith('-DoutputDirectory='))\n"
        "pathlib.Path(out).mkdir(parents=True)\n"
        "(pathlib.Path(out) / 'kafka_2.13-4.1.1.jar').touch()\n",
    )


def _write_python_script(path: Path, body: str) -> None:
    path.write_text(f"#!{sys.executable}\nimport os, pathlib, sys, time\n{body}")
    path.chmod(0o755)


def test_jars_are_resolved_once_then_served_from_the_cache(fake_tools: Path, tmp_path: Path) -> None:
    calls = tmp_path / "mvn-calls"
    _write_fake_mvn(fake_tools, calls)
    cfg = DevBrokerConfig(cache_dir=tmp_path / "cache")

    first = resolve_kafka_jars(cfg)
    second = resolve_kafka_jars(cfg)

    assert first == second
    assert (first / "kafka_2.13-4.1.1.jar").is_file()
    assert calls.read_text().count("call") == 1


def _write_fake_java(bin_dir: Path, broker_body: str) -> None:
    """A ``java`` whose StorageTool succeeds and whose ``kafka.Kafka`` runs ``broker_body``."""
    _write_python_script(
        bin_dir / "java", f"if 'kafka.tools.StorageTool' in sys.argv:\n    sys.exit(0)\n{broker_body}\n"
    )


def _fake_broker_config(tmp_path: Path, ready_timeout_s: float = 60.0) -> DevBrokerConfig:
    return DevBrokerConfig(
        cache_dir=tmp_path / "cache",
        state_dir=tmp_path / "state",
        port=0,
        ready_timeout_s=ready_timeout_s,
        stop_timeout_s=2.0,
    )


def test_broker_exiting_at_startup_is_reported_with_its_log(fake_tools: Path, tmp_path: Path) -> None:
    _write_fake_mvn(fake_tools, tmp_path / "mvn-calls")
    _write_fake_java(fake_tools, "print('FATAL boom: bad config', flush=True)\nsys.exit(3)")
    cfg = _fake_broker_config(tmp_path)

    with pytest.raises(DevBrokerError, match=r"(?s)exit code 3.*FATAL boom: bad config.*Operator action:"):
        start_broker(cfg)
    assert not (cfg.state_dir / "broker.pid").exists()


def test_silent_broker_is_stopped_after_the_ready_timeout(fake_tools: Path, tmp_path: Path) -> None:
    _write_fake_mvn(fake_tools, tmp_path / "mvn-calls")
    java_pid = tmp_path / "java.pid"
    _write_fake_java(fake_tools, f"pathlib.Path({str(java_pid)!r}).write_text(str(os.getpid()))\ntime.sleep(60)")
    cfg = _fake_broker_config(tmp_path, ready_timeout_s=1.5)

    with pytest.raises(DevBrokerError, match=r"(?s)did not answer.*Operator action:"):
        start_broker(cfg)
    assert not _pid_exists(int(java_pid.read_text()))
    assert not (cfg.state_dir / "broker.pid").exists()


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# --- pid identity: stale and foreign pids are never signalled ------------------------------------


def _start_stand_in(tmp_path: Path, config_path: Path) -> subprocess.Popen[bytes]:
    """A sleeping Python started as ``.../java -c ... kafka.Kafka <config_path>``, like a broker JVM."""
    java = tmp_path / "jvm" / "java"
    java.parent.mkdir(exist_ok=True)
    java.symlink_to(os.path.realpath(sys.executable))
    code = "import time; time.sleep(60)"
    process = subprocess.Popen([str(java), "-c", code, "kafka.Kafka", str(config_path)])
    _wait_for_command_line(process.pid, b"kafka.Kafka")
    return process


def _wait_for_command_line(pid: int, needle: bytes) -> None:
    """Right after exec the kernel may still show an empty command line; wait until it is set."""
    deadline = time.monotonic() + 10
    cmdline = Path(f"/proc/{pid}/cmdline")
    while needle not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)


@pytest.fixture
def stand_in_owner() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Collects stand-in processes and makes sure every one is gone after the test."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def test_dead_pid_is_reported_not_running_and_cleared(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "broker.pid").write_text(f"{dead.pid}\n")

    status = broker_status(tmp_path)
    assert not status.running
    assert not status.reachable
    assert status.pid == dead.pid
    assert stop_broker(tmp_path) is False
    assert not (tmp_path / "broker.pid").exists()


def test_foreign_broker_pid_is_not_signalled(tmp_path: Path, stand_in_owner: list[subprocess.Popen[bytes]]) -> None:
    foreign = _start_stand_in(tmp_path, tmp_path / "elsewhere" / "server.properties")
    stand_in_owner.append(foreign)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "broker.pid").write_text(f"{foreign.pid}\n")

    assert not broker_status(state_dir).running
    assert stop_broker(state_dir, timeout_s=1.0) is False
    assert foreign.poll() is None


def test_own_broker_pid_is_stopped(tmp_path: Path, stand_in_owner: list[subprocess.Popen[bytes]]) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    own = _start_stand_in(tmp_path, state_dir / "server.properties")
    stand_in_owner.append(own)
    (state_dir / "broker.pid").write_text(f"{own.pid}\n")

    assert broker_status(state_dir).running
    assert stop_broker(state_dir, timeout_s=5.0) is True
    assert not _pid_exists(own.pid)  # stop_broker reaped its child, as it does for a broker it started


# --- CLI -------------------------------------------------------------------------------------------


def _run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="eventray")
    add_kafka_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_cli_status_of_an_empty_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    assert _run_cli("kafka", "status", "--state-dir", str(tmp_path)) == 3
    assert "not running" in capsys.readouterr().out


def test_cli_up_defers_to_kafka_bootstrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", "127.0.0.1:1")
    assert _run_cli("kafka", "up", "--state-dir", str(tmp_path)) == 0
    assert "existing broker" in capsys.readouterr().out
    assert not (tmp_path / "server.properties").exists()
