"""Tolerant access to manifest documents (plain dicts from YAML) and the violation record rules return.

Rules run on documents that may also fail schema validation, so every accessor returns an empty value
instead of raising when a field is missing or has the wrong type; the schema check reports the type error.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Violation",
    "cluster_specs",
    "env_entry",
    "format_path",
    "mapping",
    "pod_spec",
    "ray_groups",
    "sequence",
]


@dataclass(frozen=True)
class Violation:
    """One problem in one manifest: the dotted path of the offending field and what is wrong with it."""

    path: str
    message: str


def format_path(parts: Iterable[Any]) -> str:
    """``['spec', 'workerGroupSpecs', 0, 'maxReplicas']`` -> ``spec.workerGroupSpecs[0].maxReplicas``."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(document)"


def mapping(value: Any) -> dict[str, Any]:
    """``value`` if it is a mapping, else an empty dict."""
    return value if isinstance(value, dict) else {}


def sequence(value: Any) -> list[Any]:
    """``value`` if it is a list, else an empty list."""
    return value if isinstance(value, list) else []


def env_entry(env: Any, name: str) -> dict[str, Any] | None:
    """The entry called ``name`` of a container's ``env`` list, or None."""
    for entry in sequence(env):
        if mapping(entry).get("name") == name:
            return mapping(entry)
    return None


def cluster_specs(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The RayCluster specs inside a Ray manifest, each with the dotted path that leads to it."""
    spec = mapping(document.get("spec"))
    kind = document.get("kind")
    if kind == "RayCluster":
        return [("spec", spec)]
    if kind == "RayJob" and "rayClusterSpec" in spec:
        return [("spec.rayClusterSpec", mapping(spec["rayClusterSpec"]))]
    if kind == "RayService" and "rayClusterConfig" in spec:
        return [("spec.rayClusterConfig", mapping(spec["rayClusterConfig"]))]
    return []


def pod_spec(group: dict[str, Any]) -> dict[str, Any]:
    """The pod spec of a head or worker group (``group.template.spec``)."""
    return mapping(mapping(group.get("template")).get("spec"))


def ray_groups(spec: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    """The head group and every worker group of a RayCluster spec, with their dotted paths."""
    groups = [(f"{path}.headGroupSpec", mapping(spec.get("headGroupSpec")))]
    workers = enumerate(sequence(spec.get("workerGroupSpecs")))
    return groups + [(f"{path}.workerGroupSpecs[{index}]", mapping(group)) for index, group in workers]
