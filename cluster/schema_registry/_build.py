"""Building the runnable registry (a Quarkus app) with ``mvn`` into a shared cache, once.

Layout: ``<cache_dir>/apicurio-<version>/{build/, quarkus-app/, mvn.log, .complete, .lock}``. ``build/`` is
the rendered Maven reactor (:mod:`._maven_project`); ``quarkus-app/`` is what it produced, moved out of
``build/`` only after a successful build, so a failed or interrupted build never leaves half an app.
``.complete`` holds the sha256 of the rendered reactor that produced ``quarkus-app/``: a missing or
different marker means "build again". Building holds an exclusive lock on ``.lock``, so concurrent
``up``s (or test sessions) build once, not twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import re
import shutil
import subprocess
from pathlib import Path

from cluster.dev_services import last_lines

from ._config import DevRegistryConfig
from ._errors import DevRegistryError
from ._maven_project import APICURIO_VERSION, QUARKUS_APP_DIR, render_build_files
from ._tools import require_tool

__all__ = ["RUN_JAR_NAME", "build_failure_summary", "build_registry_app", "unresolved_artifacts"]

RUN_JAR_NAME = "quarkus-run.jar"
_COORDINATES = r"([\w.\-]+(?::[\w.\-]+){2,4})"
_UNRESOLVED_PATTERNS = [
    re.compile(rf"{phrase} {_COORDINATES}")
    for phrase in (
        "Could not find artifact",
        "Failure to find",
        "Could not transfer artifact",
        "Failed to read artifact descriptor for",
        "Failed to collect dependencies of",  # Quarkus, resolving an extension's deployment module
    )
]


def build_registry_app(cfg: DevRegistryConfig) -> Path:
    """Return the registry's ``quarkus-run.jar``, running ``mvn`` only when the cache lacks this build.

    Blocks for the build on the first call (about two minutes on a cold ``~/.m2``), returns at once after.
    Raises DevRegistryError, with an "Operator action:" line, the artifacts Maven could not resolve and the
    path of the full mvn log, when java or mvn is missing or mvn fails.
    """
    require_tool("java")
    version_dir = cfg.cache_dir / f"apicurio-{APICURIO_VERSION.removesuffix('.Final')}"
    files = render_build_files()
    digest = _digest(files)
    app_dir, marker = version_dir / "quarkus-app", version_dir / ".complete"
    version_dir.mkdir(parents=True, exist_ok=True)
    with (version_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (_is_complete(marker, digest) and (app_dir / RUN_JAR_NAME).is_file()):
            _build(version_dir, files, cfg.build_timeout_s)
            marker.write_text(digest + "\n")
    return app_dir / RUN_JAR_NAME


def _digest(files: dict[str, str]) -> str:
    sha = hashlib.sha256()
    for path in sorted(files):
        sha.update(f"{path}\0{files[path]}\0".encode())
    return sha.hexdigest()


def _is_complete(marker: Path, digest: str) -> bool:
    return marker.is_file() and marker.read_text().strip() == digest


def _build(version_dir: Path, files: dict[str, str], timeout_s: float) -> None:
    """Render the reactor afresh into ``build/``, run ``mvn package``, then move the app to ``quarkus-app/``."""
    mvn = require_tool("mvn")
    build_dir, log_path = version_dir / "build", version_dir / "mvn.log"
    shutil.rmtree(build_dir, ignore_errors=True)
    for relative, text in files.items():
        target = build_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    command = [str(mvn), "-B", "-Dstyle.color=never", "-DskipTests", "-f", str(build_dir / "pom.xml"), "package"]
    with log_path.open("w") as log:
        try:
            done = subprocess.run(  # noqa: S603 - fixed argv, no shell; the only input is our own reactor
                command, stdout=log, stderr=subprocess.STDOUT, cwd=build_dir, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise DevRegistryError(
                f"mvn did not finish building the schema registry within {timeout_s:.0f} s (log: {log_path}).\n"
                "Operator action: check access to Maven Central (repo.maven.apache.org), then run "
                "`eventray registry up` again."
            ) from exc
    if done.returncode != 0:
        raise DevRegistryError(
            f"mvn failed (exit {done.returncode}) building the schema registry from {build_dir / 'pom.xml'}.\n"
            f"{build_failure_summary(log_path.read_text(errors='replace'))}\n"
            f"Full log: {log_path}\n"
            "Operator action: fix the cause above (network access to Maven Central, ~/.m2/settings.xml mirrors, "
            "disk space; an artifact no longer served needs a change in cluster/schema_registry), then run "
            "`eventray registry up` again."
        )
    app_dir = version_dir / "quarkus-app"
    shutil.rmtree(app_dir, ignore_errors=True)
    (build_dir / QUARKUS_APP_DIR).rename(app_dir)


def unresolved_artifacts(mvn_log: str) -> list[str]:
    """The Maven coordinates an ``mvn`` log says could not be found or downloaded, first mention first."""
    found: dict[str, None] = {}
    for pattern in _UNRESOLVED_PATTERNS:
        for match in pattern.finditer(mvn_log):
            found.setdefault(match.group(1), None)
    return sorted(found, key=mvn_log.index)


def build_failure_summary(mvn_log: str) -> str:
    """What went wrong, for an error message: the artifacts not resolved, the first failed goal, the last lines."""
    parts = []
    missing = unresolved_artifacts(mvn_log)
    if missing:
        parts.append("Not resolved from the Maven repositories: " + ", ".join(missing))
    failed_goal = next((line for line in mvn_log.splitlines() if line.startswith("[ERROR] Failed to execute")), None)
    if failed_goal is not None:
        parts.append(failed_goal)
    else:
        parts.append(last_lines(mvn_log, 20))
    return "\n".join(parts)
