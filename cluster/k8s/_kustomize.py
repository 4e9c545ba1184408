"""A ``kustomize build`` for the subset of kustomize that ``k8s/`` uses, so overlays render with no binary.

Supported kustomization fields: ``resources`` (files in or below the kustomization, or other
kustomization directories), ``configMapGenerator`` (literals and files; behaviors create, merge and
replace; name hash suffix disabled), ``generatorOptions``, ``patches`` (strategic merge on maps, or JSON
6902 with a target), ``namespace``, ``labels`` (metadata only) and ``images``. Transformers run in
kustomize's order: patches, namespace, labels, images. Any other field raises ConfigError rather than
being ignored, so this renderer never silently differs from kustomize.

Name hash suffixes and ``namePrefix`` are left out on purpose: kustomize rewrites references to renamed
ConfigMaps only in built-in kinds, not inside RayCluster pod templates, so they would break references.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError

from ._generators import apply_configmap_generators, local_file
from ._patches import apply_json6902, apply_strategic_merge
from ._tree import mapping, sequence
from ._yaml import load_documents, parse_documents

__all__ = ["build_kustomization", "find_kustomization_roots", "kustomization_file", "referenced_files"]

KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED_FIELDS = {
    "apiVersion",
    "kind",
    "resources",
    "configMapGenerator",
    "generatorOptions",
    "patches",
    "namespace",
    "labels",
    "images",
}
_CLUSTER_SCOPED = {
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
}
_TARGET_KEYS = {"group", "version", "kind", "name", "namespace"}


def kustomization_file(root: Path) -> Path | None:
    """The kustomization file of directory ``root``, or None."""
    return next((root / name for name in KUSTOMIZATION_NAMES if (root / name).is_file()), None)


def _load_kustomization(root: Path) -> dict[str, Any]:
    file = kustomization_file(root)
    if file is None:
        raise ConfigError(f"{root} has no kustomization.yaml")
    documents = load_documents(file)
    data = mapping(documents[0]) if len(documents) == 1 else {}
    if not data:
        raise ConfigError(f"{file} must hold one mapping")
    unsupported = sorted(set(data) - SUPPORTED_FIELDS)
    if unsupported:
        raise ConfigError(
            f"{file}: field(s) {unsupported} are not supported by eventray's kustomize renderer; "
            f"supported: {sorted(SUPPORTED_FIELDS)}. "
            "Operator action: use those, or extend cluster/k8s/_kustomize.py."
        )
    if data.get("kind", "Kustomization") != "Kustomization":
        raise ConfigError(f"{file}: kind must be Kustomization (components are not supported)")
    return data


def _identity(document: dict[str, Any]) -> tuple[str, str, str, str]:
    metadata = mapping(document.get("metadata"))
    return (
        str(document.get("apiVersion")),
        str(document.get("kind")),
        str(metadata.get("namespace", "")),
        str(metadata.get("name")),
    )


def _load_resources(root: Path, data: dict[str, Any]) -> list[dict[str, Any]]:
    resources: list[dict[str, Any]] = []
    for entry in sequence(data.get("resources")):
        if "://" in str(entry):
            raise ConfigError(f"{root}: remote resource {entry} is not supported")
        target = (root / str(entry)).resolve()
        if target.is_dir():
            resources += build_kustomization(target)
            continue
        for document in load_documents(local_file(root, str(entry))):
            if not isinstance(document, dict) or not mapping(document.get("metadata")).get("name"):
                raise ConfigError(f"{target}: every resource needs apiVersion, kind and metadata.name")
            resources.append(document)
    seen: set[tuple[str, str, str, str]] = set()
    for document in resources:
        if _identity(document) in seen:
            raise ConfigError(f"{root}: resource {'/'.join(_identity(document))} is defined twice")
        seen.add(_identity(document))
    return resources


def _selector_fields(document: dict[str, Any]) -> dict[str, str]:
    group, _, version = str(document.get("apiVersion", "")).rpartition("/")
    metadata = mapping(document.get("metadata"))
    return {
        "group": group,
        "version": version,
        "kind": str(document.get("kind")),
        "name": str(metadata.get("name")),
        "namespace": str(metadata.get("namespace", "")),
    }


def _matches(document: dict[str, Any], target: dict[str, Any]) -> bool:
    """kustomize's selector: every given field is an anchored regular expression."""
    fields = _selector_fields(document)
    return all(re.fullmatch(str(pattern), fields[key]) for key, pattern in target.items())


def _patch_body(root: Path, entry: dict[str, Any]) -> tuple[Any, str]:
    unknown = sorted(set(entry) - {"path", "patch", "target"})
    if unknown or ("path" in entry) == ("patch" in entry):
        raise ConfigError(f"{root}: each patch needs exactly one of path or patch, plus an optional target")
    if "path" in entry:
        file = local_file(root, str(entry["path"]))
        documents, source = load_documents(file), str(file)
    else:
        source = f"{root} (inline patch)"
        documents = parse_documents(str(entry["patch"]), source)
    if len(documents) != 1:
        raise ConfigError(f"patch {source} must hold exactly one document")
    return documents[0], source


def _patch_target(body: Any, entry: dict[str, Any], source: str) -> dict[str, Any]:
    target = mapping(entry.get("target"))
    if set(target) - _TARGET_KEYS:
        raise ConfigError(f"patch {source}: target keys {sorted(set(target) - _TARGET_KEYS)} are not supported")
    if target:
        return target
    if isinstance(body, list):
        raise ConfigError(f"patch {source}: a JSON 6902 patch needs a target (kind and name)")
    fields = _selector_fields(mapping(body))
    return {key: re.escape(fields[key]) for key in ("group", "version", "kind", "name")}


def _apply_patch(root: Path, entry: Any, resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    body, source = _patch_body(root, mapping(entry))
    target = _patch_target(body, mapping(entry), source)
    if not any(_matches(document, target) for document in resources):
        raise ConfigError(f"patch {source} matches no resource (target {target})")
    if isinstance(body, list):
        return [apply_json6902(d, body, source) if _matches(d, target) else d for d in resources]
    merge = copy.deepcopy(mapping(body))
    mapping(merge.get("metadata")).pop("name", None)
    return [apply_strategic_merge(d, merge, source) if _matches(d, target) else d for d in resources]


def _add_labels(resources: list[dict[str, Any]], entries: Any, root: Path) -> None:
    for entry in map(mapping, sequence(entries)):
        if set(entry) - {"pairs", "includeSelectors", "includeTemplates"} or any(
            entry.get(flag) for flag in ("includeSelectors", "includeTemplates")
        ):
            raise ConfigError(f"{root}: labels supports pairs only (includeSelectors/includeTemplates false)")
        for document in resources:
            document.setdefault("metadata", {}).setdefault("labels", {}).update(mapping(entry.get("pairs")))


def _set_namespace(resources: list[dict[str, Any]], namespace: str) -> None:
    for document in resources:
        if document.get("kind") not in _CLUSTER_SCOPED:
            document.setdefault("metadata", {})["namespace"] = namespace


def _retag(image: str, rule: dict[str, Any]) -> str:
    reference, _, digest = image.partition("@")
    name, tag = reference, ""
    if reference.rfind(":") > reference.rfind("/"):
        name, _, tag = reference.rpartition(":")
    if name != rule.get("name"):
        return image
    name = str(rule.get("newName", name))
    if rule.get("digest"):
        return f"{name}@{rule['digest']}"
    if rule.get("newTag") is not None:
        return f"{name}:{rule['newTag']}"
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _set_images(node: Any, rules: list[dict[str, Any]]) -> None:
    """kustomize's image transformer: each ``image`` in any ``containers``/``initContainers`` list."""
    if isinstance(node, list):
        for item in node:
            _set_images(item, rules)
        return
    for key, value in mapping(node).items():
        if key in ("containers", "initContainers"):
            for container in map(mapping, sequence(value)):
                if isinstance(container.get("image"), str):
                    for rule in rules:
                        container["image"] = _retag(container["image"], rule)
        _set_images(value, rules)


def build_kustomization(root: Path) -> list[dict[str, Any]]:
    """The resources ``kustomize build root`` prints, as dicts (order: as accumulated, not kustomize's sort).

    Raises ConfigError for a missing or unsupported kustomization, a file outside the root, a duplicate
    resource, a patch that matches nothing or uses unsupported semantics.
    """
    root = root.resolve()
    data = _load_kustomization(root)
    resources = apply_configmap_generators(root, data, _load_resources(root, data))
    for entry in sequence(data.get("patches")):
        resources = _apply_patch(root, entry, resources)
    if data.get("namespace"):
        _set_namespace(resources, str(data["namespace"]))
    _add_labels(resources, data.get("labels"), root)
    rules = [mapping(rule) for rule in sequence(data.get("images"))]
    if any(set(rule) - {"name", "newName", "newTag", "digest"} for rule in rules):
        raise ConfigError(f"{root}: images entries take name, newName, newTag and digest only")
    _set_images(resources, rules)
    return resources


def referenced_files(root: Path) -> set[Path]:
    """Every file a build of ``root`` reads: kustomization files, resources, patches, generator inputs."""
    root = root.resolve()
    data = _load_kustomization(root)
    files = {path.resolve() for path in [kustomization_file(root)] if path is not None}
    for entry in map(str, sequence(data.get("resources"))):
        target = (root / entry).resolve()
        files |= referenced_files(target) if target.is_dir() else {target}
    files |= {local_file(root, str(mapping(p)["path"])) for p in sequence(data.get("patches")) if "path" in mapping(p)}
    for generator in map(mapping, sequence(data.get("configMapGenerator"))):
        files |= {local_file(root, str(item).rpartition("=")[2]) for item in sequence(generator.get("files"))}
    return files


def find_kustomization_roots(path: Path) -> list[Path]:
    """Every directory at or below ``path`` that holds a kustomization file, sorted."""
    candidates = [path, *sorted(p for p in path.rglob("*") if p.is_dir())] if path.is_dir() else []
    return [candidate.resolve() for candidate in candidates if kustomization_file(candidate) is not None]
