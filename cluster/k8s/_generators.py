"""kustomize's ``configMapGenerator``: ConfigMaps from literals and files, created or merged into a base's.

Only generators with the name hash suffix disabled (``options.disableNameSuffixHash: true`` or the same in
``generatorOptions``) are accepted: references to a hashed name are not rewritten inside custom resources.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError

from ._tree import mapping, sequence

__all__ = ["apply_configmap_generators", "local_file"]

_GENERATOR_KEYS = {"name", "namespace", "behavior", "literals", "files", "options"}
_OPTION_KEYS = {"disableNameSuffixHash", "labels", "annotations"}


def _literal(item: str, root: Path) -> tuple[str, str]:
    key, separator, value = item.partition("=")
    if not separator or not key:
        raise ConfigError(f"{root}: configMapGenerator literal {item!r} must be KEY=VALUE")
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return key, value


def local_file(root: Path, entry: str) -> Path:
    """``root/entry``, refused (as kustomize does by default) when it lies outside ``root``."""
    path = (root / entry).resolve()
    if not path.is_relative_to(root.resolve()):
        raise ConfigError(f"{root}: {entry} is not in or below the kustomization directory (load restrictor)")
    return path


def _file_entry(item: str, root: Path) -> tuple[str, str]:
    key, separator, relative = item.rpartition("=")
    path = local_file(root, relative)
    try:
        return (key if separator else path.name), path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{root}: configMapGenerator file {relative} does not exist") from None


def _options(generator: dict[str, Any], defaults: dict[str, Any], root: Path) -> dict[str, Any]:
    options = {**defaults, **mapping(generator.get("options"))}
    if set(options) - _OPTION_KEYS:
        raise ConfigError(f"{root}: generator options {sorted(set(options) - _OPTION_KEYS)} are not supported")
    if options.get("disableNameSuffixHash") is not True:
        raise ConfigError(
            f"{root}: configMapGenerator {generator.get('name')!r} needs disableNameSuffixHash: true, "
            "because hashed names are not rewritten inside RayCluster pod templates. "
            "Operator action: set it in options or generatorOptions."
        )
    return options


def _generate(generator: dict[str, Any], defaults: dict[str, Any], root: Path) -> dict[str, Any]:
    if set(generator) - _GENERATOR_KEYS or not generator.get("name"):
        raise ConfigError(f"{root}: configMapGenerator entries take {sorted(_GENERATOR_KEYS)} and need a name")
    options = _options(generator, defaults, root)
    data = dict(_literal(str(item), root) for item in sequence(generator.get("literals")))
    data.update(_file_entry(str(item), root) for item in sequence(generator.get("files")))
    metadata: dict[str, Any] = {"name": generator["name"]}
    if generator.get("namespace"):
        metadata["namespace"] = generator["namespace"]
    for field in ("labels", "annotations"):
        if options.get(field):
            metadata[field] = dict(mapping(options[field]))
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}


def _same_configmap(document: dict[str, Any], generated: dict[str, Any]) -> bool:
    mine, theirs = mapping(document.get("metadata")), generated["metadata"]
    return (
        document.get("kind") == "ConfigMap"
        and mine.get("name") == theirs["name"]
        and mine.get("namespace", "") == theirs.get("namespace", "")
    )


def _combine(existing: dict[str, Any], generated: dict[str, Any], behavior: str) -> dict[str, Any]:
    combined = dict(existing)
    combined["data"] = (
        generated["data"] if behavior == "replace" else {**mapping(existing.get("data")), **generated["data"]}
    )
    metadata = dict(mapping(existing.get("metadata")))
    for field in ("labels", "annotations"):
        if field in generated["metadata"]:
            metadata[field] = {**mapping(metadata.get(field)), **generated["metadata"][field]}
    combined["metadata"] = metadata
    return combined


def apply_configmap_generators(
    root: Path, data: dict[str, Any], resources: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """``resources`` plus the kustomization's generated ConfigMaps (create), or with them merged/replaced."""
    defaults = mapping(data.get("generatorOptions"))
    result = list(resources)
    for generator in map(mapping, sequence(data.get("configMapGenerator"))):
        generated = _generate(generator, defaults, root)
        behavior = str(generator.get("behavior", "create"))
        matches = [index for index, document in enumerate(result) if _same_configmap(document, generated)]
        if behavior == "create" and not matches:
            result.append(generated)
        elif behavior in ("merge", "replace") and matches:
            result[matches[0]] = _combine(result[matches[0]], generated, behavior)
        else:
            raise ConfigError(
                f"{root}: configMapGenerator {generated['metadata']['name']!r} with behavior {behavior!r} "
                f"{'needs' if not matches else 'conflicts with'} an existing ConfigMap of that name"
            )
    return result
