"""The dev schema registry's pure parts: config, the rendered Maven reactor, the build cache, mvn failures, state
files, pid identity, start/status/stop and the CLI.

No JVM, no Maven and no network: ``mvn`` and ``java`` are stand-in scripts, the registry a small Python HTTP
server started under the name ``java`` that answers ``/apis/ccompat/v7/subjects``.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from cluster.schema_registry import (
    DevRegistryConfig,
    DevRegistryError,
    build_registry_app,
    registry_status,
    registry_url_from_env,
    start_registry,
    stop_registry,
)
from cluster.schema_registry._build import unresolved_artifacts
from cluster.schema_registry._maven_project import QUARKUS_APP_DIR, render_build_files
from cluster.schema_registry._process import is_registry_process, registry_argv
from cluster.schema_registry._state_files import RegistryRecord, StatePaths
from cluster.schema_registry.cli import add_registry_commands

POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}

# What mvn 3.8.7 printed here, 2026-12-08, for each of the two artifacts Maven Central does not serve.
EVERIT_FAILURE = (
    "[ERROR] Failed to execute goal on project registry-dev-app: Could not resolve dependencies for project "
    "dev.eventray:registry-dev-app:jar:2.4.2.Final: Failed to collect dependencies at "
    "io.apicurio:apicurio-registry-app:jar:2.4.2.Final -> com.github.everit-org.json-schema:org.everit.json.schema"
    ":jar:1.14.2: Failed to read artifact descriptor for com.github.everit-org.json-schema:org.everit.json.schema"
    ":jar:1.14.2: Could not transfer artifact com.github.everit-org.json-schema:org.everit.json.schema:pom:1.14.2 "
    "from/to confluent (https://packages.confluent.io/maven/): transfer failed"
)
DEPLOYMENT_FAILURE = (
    "[ERROR] Failed to execute goal io.quarkus:quarkus-maven-plugin:2.16.4.Final:build (default) on project "
    "registry-dev-app: Failed to build quarkus application: Failed to bootstrap application in NORMAL mode: Failed "
    "to inject extension deployment dependencies for dev.eventray:registry-dev-app:2.4.2.Final: Failed to collect "
    "dependencies of io.apicurio:apicurio-common-app-components-config-index-deployment:jar:0.1.18.Final: either "
    "its POM could not be resolved"
)


# --- config ---------------------------------------------------------------------------------------


def test_cache_dir_follows_eventray_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EVENTRAY_CACHE_DIR", str(tmp_path / "cache"))
    assert DevRegistryConfig().cache_dir == tmp_path / "cache" / "registry"


def test_default_cache_dir_is_under_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTRAY_CACHE_DIR", raising=False)
    assert DevRegistryConfig().cache_dir == (Path.home() / ".cache" / "eventray" / "registry").resolve()


def test_state_dir_defaults_under_cwd_and_is_made_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert DevRegistryConfig().state_dir == tmp_path.resolve() / ".eventray" / "registry"
    assert DevRegistryConfig(state_dir=Path("rel")).state_dir == tmp_path.resolve() / "rel"


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("  ", None), ("http://h:1/api/", "http://h:1/api")])
def test_registry_url_from_env(monkeypatch: pytest.MonkeyPatch, value: str | None, expected: str | None) -> None:
    if value is None:
        monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)
    else:
        monkeypatch.setenv("SCHEMA_REGISTRY_URL", value)
    assert registry_url_from_env() == expected


def test_error_survives_pickling() -> None:
    error = DevRegistryError("broke.\nOperator action: fix it.")
    restored = pickle.loads(pickle.dumps(error))
    assert type(restored) is DevRegistryError
    assert str(restored) == str(error)


# --- the rendered Maven reactor --------------------------------------------------------------------


def _pom(relative: str) -> ET.Element:
    return ET.fromstring(render_build_files()[relative])


def _text(element: ET.Element, path: str) -> str | None:
    return element.findtext(path, namespaces=POM_NS)


def test_reactor_builds_the_stand_in_before_the_app() -> None:
    root = _pom("pom.xml")
    modules = [module.text for module in root.iterfind("m:modules/m:module", POM_NS)]
    assert modules == ["config-index-deployment", "app"]
    assert QUARKUS_APP_DIR == "app/target/quarkus-app"


def test_root_pom_imports_the_registry_pom_as_a_bom() -> None:
    (bom,) = _pom("pom.xml").iterfind("m:dependencyManagement/m:dependencies/m:dependency", POM_NS)
    assert _text(bom, "m:groupId") == "io.apicurio"
    assert _text(bom, "m:artifactId") == "apicurio-registry"
    assert _text(bom, "m:version") == "2.4.2.Final"
    assert (_text(bom, "m:type"), _text(bom, "m:scope")) == ("pom", "import")


def test_app_pom_packages_the_registry_app_without_the_unserved_json_schema_library() -> None:
    app = _pom("app/pom.xml")
    (dependency,) = app.iterfind("m:dependencies/m:dependency", POM_NS)
    exclusions = [_text(e, "m:artifactId") for e in dependency.iterfind("m:exclusions/m:exclusion", POM_NS)]
    (plugin,) = app.iterfind("m:build/m:plugins/m:plugin", POM_NS)
    properties = {child.tag.split("}")[1]: child.text for child in app.iterfind("m:properties/*", POM_NS)}

    assert _text(dependency, "m:artifactId") == "apicurio-registry-app"
    assert exclusions == ["org.everit.json.schema"]
    assert _text(plugin, "m:artifactId") == "quarkus-maven-plugin"
    assert _text(plugin, "m:version") == "2.16.4.Final"
    assert [goal.text for goal in plugin.iterfind(".//m:goal", POM_NS)] == ["build"]
    assert properties["quarkus.index-dependency.registry-app.artifact-id"] == "apicurio-registry-app"
    app_properties = render_build_files()["app/src/main/resources/application.properties"]
    assert "%prod.quarkus.package.type=fast-jar" in app_properties.splitlines()


def test_stand_in_takes_the_coordinates_quarkus_asks_for_and_lists_its_build_step() -> None:
    files = render_build_files()
    stand_in = _pom("config-index-deployment/pom.xml")
    (step_class,) = files["config-index-deployment/src/main/resources/META-INF/quarkus-build-steps.list"].split()
    source_path = f"config-index-deployment/src/main/java/{step_class.replace('.', '/')}.java"

    assert (_text(stand_in, "m:groupId"), _text(stand_in, "m:artifactId"), _text(stand_in, "m:version")) == (
        "io.apicurio",
        "apicurio-common-app-components-config-index-deployment",
        "0.1.18.Final",
    )
    assert f"package {step_class.rpartition('.')[0]};" in files[source_path]
    assert "SyntheticBeanBuildItem.configure(DynamicConfigPropertyList.class)" in files[source_path]


# --- the build cache, with stand-ins for java and mvn ---------------------------------------------------


def _write_python_script(path: Path, body: str) -> None:
    path.write_text(f"#!{sys.executable}\nimport os, pathlib, sys, time\n{body}")
    path.chmod(0o755)


@pytest.fixture
def fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A PATH holding only a ``java`` that exits at once; tests add their own ``mvn`` (or a serving ``java``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _write_python_script(bin_dir / "java", "sys.exit(0)\n")
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def _write_fake_mvn(bin_dir: Path, calls: Path) -> None:
    """An ``mvn`` that records each call in ``calls`` and "builds" an empty quarkus-run.jar under its cwd."""
    _write_python_script(
        bin_dir / "mvn",
        f"with open({str(calls)!r}, 'a') as f:\n"
        "    f.write('call\\n')\n"
        "assert os.path.isfile('config-index-deployment/pom.xml')\n"
        f"app = pathlib.Path({QUARKUS_APP_DIR!r})\n"
        "app.mkdir(parents=True)\n"
        "(app / 'quarkus-run.jar').touch()\n",
    )


def test_missing_java_is_an_operator_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DevRegistryError, match=r"(?s)`java` was not found.*Operator action:"):
        build_registry_app(DevRegistryConfig(cache_dir=tmp_path / "cache"))


def test_missing_mvn_is_an_operator_error(fake_tools: Path, tmp_path: Path) -> None:
    with pytest.raises(DevRegistryError, match=r"(?s)`mvn` was not found.*Operator action:"):
        build_registry_app(DevRegistryConfig(cache_dir=tmp_path / "cache"))


def test_app_is_built_once_then_served_from_the_cache(fake_tools: Path, tmp_path: Path) -> None:
    calls = tmp_path / "mvn-calls"
    _write_fake_mvn(fake_tools, calls)
    cfg = DevRegistryConfig(cache_dir=tmp_path / "cache")

    first = build_registry_app(cfg)
    second = build_registry_app(cfg)

    assert first == second == tmp_path / "cache" / "apicurio-2.4.2" / "quarkus-app" / "quarkus-run.jar"
    assert first.is_file()
    assert calls.read_text().count("call") == 1


def test_failing_mvn_names_the_unresolved_artifact_and_the_log(fake_tools: Path, tmp_path: Path) -> None:
    _write_python_script(fake_tools / "mvn", f"print({EVERIT_FAILURE!r})\nsys.exit(1)\n")
    version_dir = tmp_path / "cache" / "apicurio-2.4.2"

    with pytest.raises(DevRegistryError) as raised:
        build_registry_app(DevRegistryConfig(cache_dir=tmp_path / "cache"))

    message = str(raised.value)
    assert "Not resolved from the Maven repositories: com.github.everit-org.json-schema:org.everit" in message
    assert f"Full log: {version_dir / 'mvn.log'}" in message
    assert message.splitlines()[-1].startswith("Operator action:")
    assert not (version_dir / "quarkus-app").exists()
    assert not (version_dir / ".complete").exists()


def test_unresolved_artifacts_are_read_from_real_mvn_failures() -> None:
    assert unresolved_artifacts(EVERIT_FAILURE) == [
        "com.github.everit-org.json-schema:org.everit.json.schema:jar:1.14.2",
        "com.github.everit-org.json-schema:org.everit.json.schema:pom:1.14.2",
    ]
    assert unresolved_artifacts(DEPLOYMENT_FAILURE) == [
        "io.apicurio:apicurio-common-app-components-config-index-deployment:jar:0.1.18.Final"
    ]
    assert unresolved_artifacts("[INFO] BUILD SUCCESS") == []


# --- state files -------------------------------------------------------------------------------------


def test_record_round_trips_and_garbage_reads_as_none(tmp_path: Path) -> None:
    paths = StatePaths(tmp_path)
    records = paths.records
    record = RegistryRecord("http://127.0.0.1:1/apis/ccompat/v7", 42, 1, "2026-12-08T00:00:00+00:00", "2.4.2.Final",
                            str(paths.log))  # fmt: skip
    records.write_record(record)
    records.write_pid(42)

    assert records.read_record() == record
    assert records.read_pid() == 42
    assert (records.pid_file, records.record_file) == (tmp_path / "registry.pid", tmp_path / "registry.json")
    records.record_file.write_text('{"url": "x"}')
    records.pid_file.write_text("-3\n")
    assert records.read_record() is None
    assert records.read_pid() is None
    records.forget()
    assert not records.record_file.exists()
    assert not records.pid_file.exists()


# --- pid identity and start/status/stop, with a stand-in registry ------------------------------------

FAKE_REGISTRY = """\
import http.server, sys
options = dict(arg[2:].split("=", 1) for arg in sys.argv if arg.startswith("-D"))


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        found = self.path == "/apis/ccompat/v7/subjects"
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"[]" if found else b"{}")

    def log_message(self, *args):
        pass


print("stand-in registry starting", flush=True)
server = http.server.HTTPServer((options["quarkus.http.host"], int(options["quarkus.http.port"])), Handler)
server.serve_forever()
"""


def _write_serving_java(bin_dir: Path, tmp_path: Path, program: str = FAKE_REGISTRY) -> None:
    """A ``java`` that runs ``program`` in Python with argv[0] set to ``java``, so its command line reads like the
    registry's: ``java <program.py> -Xmx... -D... -jar .../quarkus-run.jar``."""
    script = tmp_path / "fake_registry.py"
    script.write_text(program)
    (bin_dir / "java").write_text(f'#!/bin/bash\nexec -a java {sys.executable} {script} "$@"\n')
    (bin_dir / "java").chmod(0o755)


def _config(tmp_path: Path, ready_timeout_s: float = 30.0) -> DevRegistryConfig:
    return DevRegistryConfig(cache_dir=tmp_path / "cache", state_dir=tmp_path / "state", port=0,
                             ready_timeout_s=ready_timeout_s, stop_timeout_s=5.0)  # fmt: skip


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_argv_binds_loopback_only_and_carries_the_state_dir(tmp_path: Path) -> None:
    argv = registry_argv(Path("/usr/bin/java"), tmp_path / "quarkus-run.jar", tmp_path / "state", 18081, 256)

    assert "-Dquarkus.http.host=127.0.0.1" in argv
    assert "-Dquarkus.http.port=18081" in argv
    assert f"-Deventray.registry.state-dir={tmp_path / 'state'}" in argv
    assert argv[-2:] == ["-jar", str(tmp_path / "quarkus-run.jar")]


def test_start_status_stop_round_trip(fake_tools: Path, tmp_path: Path) -> None:
    _write_fake_mvn(fake_tools, tmp_path / "mvn-calls")
    _write_serving_java(fake_tools, tmp_path)
    cfg = _config(tmp_path)

    registry = start_registry(cfg)
    try:
        status = registry_status(cfg.state_dir)
        record = json.loads((cfg.state_dir / "registry.json").read_text())
        with pytest.raises(DevRegistryError, match="already running"):
            start_registry(cfg)
    finally:
        stopped = stop_registry(cfg.state_dir)

    assert registry.url == f"http://127.0.0.1:{registry.port}/apis/ccompat/v7"
    assert (status.running, status.answering, status.pid, status.url) == (True, True, registry.pid, registry.url)
    assert (record["url"], record["pid"], record["port"]) == (registry.url, registry.pid, registry.port)
    assert stopped
    assert not _pid_exists(registry.pid)
    assert not registry_status(cfg.state_dir).running
    assert not (cfg.state_dir / "registry.pid").exists()


def test_registry_exiting_at_startup_is_reported_with_its_log(fake_tools: Path, tmp_path: Path) -> None:
    _write_fake_mvn(fake_tools, tmp_path / "mvn-calls")
    _write_serving_java(fake_tools, tmp_path, "import sys\nprint('FATAL port taken', flush=True)\nsys.exit(3)\n")
    cfg = _config(tmp_path)

    with pytest.raises(DevRegistryError, match=r"(?s)exit code 3.*FATAL port taken.*Operator action:"):
        start_registry(cfg)
    assert not (cfg.state_dir / "registry.pid").exists()


def test_silent_registry_is_stopped_after_the_ready_timeout(fake_tools: Path, tmp_path: Path) -> None:
    _write_fake_mvn(fake_tools, tmp_path / "mvn-calls")
    java_pid = tmp_path / "java.pid"
    silent = f"import os, pathlib, time\npathlib.Path({str(java_pid)!r}).write_text(str(os.getpid()))\ntime.sleep(60)\n"
    _write_serving_java(fake_tools, tmp_path, silent)
    cfg = _config(tmp_path, ready_timeout_s=1.5)

    with pytest.raises(DevRegistryError, match=r"(?s)did not answer.*Operator action:"):
        start_registry(cfg)
    assert not _pid_exists(int(java_pid.read_text()))
    assert not (cfg.state_dir / "registry.pid").exists()


@pytest.fixture
def stand_in_owner() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Collects stand-in processes and makes sure every one is gone after the test."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        process.kill()
        process.wait()


def _start_sleeper(tmp_path: Path, state_dir: Path) -> subprocess.Popen[bytes]:
    """A sleeping Python whose command line reads like the registry JVM of ``state_dir``."""
    argv = ["java", "-c", "import time; time.sleep(60)", f"-Deventray.registry.state-dir={state_dir}", "-jar",
            str(tmp_path / "quarkus-run.jar")]  # fmt: skip
    process = subprocess.Popen(argv, executable=sys.executable)
    deadline = time.monotonic() + 10
    while b"-jar" not in Path(f"/proc/{process.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)
    return process


def test_dead_pid_is_reported_stopped_and_cleared(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / "registry.pid").write_text(f"{dead.pid}\n")

    status = registry_status(tmp_path)
    assert (status.running, status.answering, status.pid) == (False, False, dead.pid)
    assert stop_registry(tmp_path) is False
    assert not (tmp_path / "registry.pid").exists()


def test_foreign_registry_pid_is_not_signalled(tmp_path: Path, stand_in_owner: list[subprocess.Popen[bytes]]) -> None:
    foreign = _start_sleeper(tmp_path, tmp_path / "elsewhere")
    stand_in_owner.append(foreign)
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    (state_dir / "registry.pid").write_text(f"{foreign.pid}\n")

    assert is_registry_process(foreign.pid, tmp_path / "elsewhere")
    assert not registry_status(state_dir).running
    assert stop_registry(state_dir, timeout_s=1.0) is False
    assert foreign.poll() is None


# --- CLI -------------------------------------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="eventray")
    add_registry_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def _run_cli(*argv: str) -> int:
    args = _parse(*argv)
    code: int = args.func(args)
    return code


def test_cli_arguments() -> None:
    up = _parse("registry", "up", "--port", "0", "--json", "--state-dir", "s")
    down = _parse("registry", "down")

    assert (up.registry_command, up.port, up.json, up.state_dir) == ("up", 0, True, Path("s"))
    assert _parse("registry", "up").port == 8081
    assert (down.registry_command, down.json, down.state_dir) == ("down", False, None)
    assert _parse("registry", "status", "--json").json


@pytest.mark.parametrize("port", ["65536", "-1", "http"])
def test_cli_rejects_a_bad_port(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parse("registry", "up", "--port", port)
    assert "is not a TCP port" in capsys.readouterr().err


def test_cli_status_and_down_of_an_empty_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)
    assert _run_cli("registry", "status", "--state-dir", str(tmp_path)) == 3
    assert "stopped" in capsys.readouterr().out
    assert _run_cli("registry", "down", "--state-dir", str(tmp_path), "--json") == 0
    assert json.loads(capsys.readouterr().out)["stopped"] is False


def test_cli_up_prints_the_url_and_the_export_hint(
    fake_tools: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SCHEMA_REGISTRY_URL", raising=False)
    monkeypatch.setenv("EVENTRAY_CACHE_DIR", str(tmp_path / "cache"))
    _write_fake_mvn(fake_tools, tmp_path / "mvn-calls")
    _write_serving_java(fake_tools, tmp_path)
    state_dir = str(tmp_path / "state")
    try:
        assert _run_cli("registry", "up", "--port", "0", "--state-dir", state_dir) == 0
        url = json.loads((tmp_path / "state" / "registry.json").read_text())["url"]
        assert f"export SCHEMA_REGISTRY_URL={url}" in capsys.readouterr().out
        assert _run_cli("registry", "status", "--state-dir", state_dir, "--json") == 0
        assert json.loads(capsys.readouterr().out)["url"] == url
    finally:
        assert _run_cli("registry", "down", "--state-dir", state_dir) == 0
    assert "stopped" in capsys.readouterr().out


def test_cli_up_defers_to_schema_registry_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "http://127.0.0.1:1/apis/ccompat/v7")
    assert _run_cli("registry", "up", "--state-dir", str(tmp_path), "--json") == 0
    assert json.loads(capsys.readouterr().out) == {"url": "http://127.0.0.1:1/apis/ccompat/v7", "external": True}
    assert not (tmp_path / "registry.pid").exists()
