"""eventray's own rules for Ray manifests, on top of the schema and the operator's rules.

- Ray token auth (:mod:`._auth_rules`): one ``RAY_AUTH_MODE`` on every container, set explicitly, equal to
  ``authOptions.mode``; in token mode a ``secretName``, and the token only ever from that Secret.
- A K8sJobMode RayJob's submitter pod carries ``eventray.io/ray-client: "true"``, the label the head's
  NetworkPolicy admits to the jobs API.
- The head advertises no CPUs, so actors land on worker pods that the autoscaler can add and remove.
- A worker group advertises the ``eventray_slot`` resource that eventray actors ask for.
- A RayJob's entrypoint is ``python -m <module> --config <path in image>``; the module exists in the
  project and the config file exists and loads.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from pipelines.config.pipeline import load_config
from pipelines.errors import ConfigError

from ._auth_rules import auth_violations
from ._conventions import IMAGE_PROJECT_DIR, RAY_CLIENT_LABEL, SLOT_RESOURCE
from ._tree import Violation, cluster_specs, mapping, sequence

__all__ = ["eventray_violations", "slot_count"]


def slot_count(group: dict[str, Any]) -> float | None:
    """The ``eventray_slot`` units one pod of worker ``group`` advertises: 0 when none, None if unreadable."""
    declared = mapping(group.get("resources")).get(SLOT_RESOURCE)
    text = str(mapping(group.get("rayStartParams")).get("resources", "")).strip()
    # rayStartParams holds shell-quoted JSON for `ray start --resources`, e.g. "{\"eventray_slot\": 1}".
    if text.startswith('"') and text.endswith('"'):
        text = text[1:-1].replace('\\"', '"')
    try:
        if declared is not None:
            return float(declared)
        return float(mapping(json.loads(text)).get(SLOT_RESOURCE, 0)) if text else 0.0
    except (ValueError, TypeError):
        return None


def _placement_violations(spec: dict[str, Any], path: str) -> list[Violation]:
    found = []
    head_cpus = mapping(mapping(spec.get("headGroupSpec")).get("rayStartParams")).get("num-cpus")
    if head_cpus != "0":
        found.append(
            Violation(
                f"{path}.headGroupSpec.rayStartParams.num-cpus",
                f'must be "0" (no actors on the head), got {head_cpus!r}',
            )
        )
    counts = [slot_count(mapping(group)) for group in sequence(spec.get("workerGroupSpecs"))]
    found += [
        Violation(f"{path}.workerGroupSpecs[{index}].rayStartParams.resources", "is not JSON")
        for index, count in enumerate(counts)
        if count is None
    ]
    if sum(count or 0.0 for count in counts) <= 0:
        found.append(
            Violation(
                f"{path}.workerGroupSpecs",
                f"no worker group advertises {SLOT_RESOURCE}: actors would never be placed",
            )
        )
    return found


def _config_violations(config_path: str | None, project_dir: Path) -> list[Violation]:
    if config_path is None:
        return [Violation("spec.entrypoint", "passes no --config PATH")]
    prefix = IMAGE_PROJECT_DIR + "/"
    if not config_path.startswith(prefix):
        return [Violation("spec.entrypoint", f"--config {config_path} is not under {prefix} (baked into the image)")]
    local = project_dir / config_path.removeprefix(prefix)
    if not local.is_file():
        return [Violation("spec.entrypoint", f"--config {config_path}: {local} does not exist in the project")]
    try:
        load_config(local)
    except ConfigError as error:
        return [Violation("spec.entrypoint", f"--config {config_path} does not load: {error}")]
    return []


def _option_value(words: list[str], option: str) -> str | None:
    for index, word in enumerate(words):
        if word == option and index + 1 < len(words):
            return words[index + 1]
        if word.startswith(option + "="):
            return word.split("=", 1)[1]
    return None


def _entrypoint_violations(spec: dict[str, Any], project_dir: Path) -> list[Violation]:
    try:
        words = shlex.split(str(spec.get("entrypoint", "")))
    except ValueError as error:
        return [Violation("spec.entrypoint", f"cannot be split like a shell command: {error}")]
    if len(words) < 3 or words[0] not in ("python", "python3") or words[1] != "-m":
        return [
            Violation(
                "spec.entrypoint",
                "must be: python -m cluster.job --config <path in image> (or cluster.examples.<name>)",
            )
        ]
    module = Path(project_dir, *words[2].split("."))
    found = []
    if not (module.with_suffix(".py").is_file() or (module / "__main__.py").is_file()):
        found.append(Violation("spec.entrypoint", f"module {words[2]} does not exist: no {module}.py in the project"))
    return found + _config_violations(_option_value(words, "--config"), project_dir)


def _submitter_violations(spec: dict[str, Any]) -> list[Violation]:
    if spec.get("submissionMode", "K8sJobMode") != "K8sJobMode":
        return []
    labels = mapping(mapping(mapping(spec.get("submitterPodTemplate")).get("metadata")).get("labels"))
    if labels.get(RAY_CLIENT_LABEL) == "true":
        return []
    return [
        Violation(
            "spec.submitterPodTemplate.metadata.labels",
            f'needs {RAY_CLIENT_LABEL}: "true": the NetworkPolicy eventray-ray-head admits only pods with that '
            "label to the jobs API (8265), so the submitter could not submit the job",
        )
    ]


def eventray_violations(document: dict[str, Any], project_dir: Path) -> list[Violation]:
    """Every eventray rule broken by a Ray document; ``project_dir`` is the tree the image is built from."""
    found = auth_violations(document)
    for path, spec in cluster_specs(document):
        found += _placement_violations(spec, path)
    spec = mapping(document.get("spec"))
    if document.get("kind") == "RayJob":
        found += _submitter_violations(spec) + _entrypoint_violations(spec, project_dir)
    return found
