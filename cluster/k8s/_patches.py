"""The two patch formats of a kustomization: strategic merge (maps only) and JSON 6902.

Strategic merge is supported for the simple case eventray uses: maps merge recursively and ``null``
deletes a key. Lists are refused, because for custom resources kustomize merges lists by keys it infers
(``name``), which this renderer does not replicate; a JSON 6902 patch with an index path says exactly
which list element changes. Both functions return a new document and never modify their inputs.
"""

from __future__ import annotations

import copy
from typing import Any

from pipelines.errors import ConfigError

__all__ = ["apply_json6902", "apply_strategic_merge"]

_DIRECTIVE_PREFIX = "$"


def _merge(base: Any, patch: Any, path: str, source: str) -> Any:
    if not isinstance(patch, dict):
        if isinstance(patch, list):
            raise ConfigError(
                f"patch {source} sets the list at {path or '/'}: strategic-merge list semantics for custom "
                "resources are not supported. Operator action: use a JSON 6902 patch with an index path."
            )
        return copy.deepcopy(patch)
    merged = copy.deepcopy(base) if isinstance(base, dict) else {}
    for key, value in patch.items():
        if str(key).startswith(_DIRECTIVE_PREFIX):
            raise ConfigError(f"patch {source} uses directive {key} at {path or '/'}, which is not supported")
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = _merge(merged.get(key), value, f"{path}/{key}", source)
    return merged


def apply_strategic_merge(document: dict[str, Any], patch: dict[str, Any], source: str) -> dict[str, Any]:
    """``document`` with the maps of ``patch`` merged in; raises ConfigError if ``patch`` sets a list."""
    result: dict[str, Any] = _merge(document, patch, "", source)
    return result


def _pointer(path: Any, source: str) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise ConfigError(f"patch {source}: path {path!r} is not a JSON pointer (it must start with '/')")
    return [part.replace("~1", "/").replace("~0", "~") for part in path.split("/")[1:]]


def _index(container: list[Any], part: str, source: str, *, appending: bool = False) -> int:
    if appending and part == "-":
        return len(container)
    if not part.isdigit() or int(part) > len(container) - (0 if appending else 1):
        raise ConfigError(f"patch {source}: list index {part!r} is out of range (length {len(container)})")
    return int(part)


def _parent(document: Any, parts: list[str], source: str) -> Any:
    node = document
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[_index(node, part, source)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise ConfigError(f"patch {source}: /{'/'.join(parts)} does not exist in the target")
    return node


def _get(document: Any, parts: list[str], source: str) -> Any:
    if not parts:
        return document
    parent = _parent(document, parts, source)
    if isinstance(parent, list):
        return parent[_index(parent, parts[-1], source)]
    if isinstance(parent, dict) and parts[-1] in parent:
        return parent[parts[-1]]
    raise ConfigError(f"patch {source}: /{'/'.join(parts)} does not exist in the target")


def _remove(document: Any, parts: list[str], source: str) -> Any:
    value = _get(document, parts, source)
    parent = _parent(document, parts, source)
    if isinstance(parent, list):
        parent.pop(_index(parent, parts[-1], source))
    else:
        del parent[parts[-1]]
    return value


def _add(document: Any, parts: list[str], value: Any, source: str) -> None:
    parent = _parent(document, parts, source)
    if isinstance(parent, list):
        parent.insert(_index(parent, parts[-1], source, appending=True), copy.deepcopy(value))
    elif isinstance(parent, dict):
        parent[parts[-1]] = copy.deepcopy(value)
    else:
        raise ConfigError(f"patch {source}: the parent of /{'/'.join(parts)} is neither a map nor a list")


def _replace(document: Any, parts: list[str], value: Any, source: str) -> None:
    parent = _parent(document, parts, source)
    if isinstance(parent, list):
        parent[_index(parent, parts[-1], source)] = copy.deepcopy(value)
    else:
        parent[parts[-1]] = copy.deepcopy(value)


def _apply_operation(document: dict[str, Any], operation: dict[str, Any], source: str) -> None:
    op, parts = operation.get("op"), _pointer(operation.get("path"), source)
    if not parts:
        raise ConfigError(f"patch {source}: operations on the whole document are not supported")
    if op == "add":
        _add(document, parts, operation.get("value"), source)
    elif op == "remove":
        _remove(document, parts, source)
    elif op == "replace":
        _get(document, parts, source)
        _replace(document, parts, operation.get("value"), source)
    elif op in ("move", "copy"):
        origin = _pointer(operation.get("from"), source)
        value = _remove(document, origin, source) if op == "move" else copy.deepcopy(_get(document, origin, source))
        _add(document, parts, value, source)
    elif op == "test":
        if _get(document, parts, source) != operation.get("value"):
            raise ConfigError(f"patch {source}: test of {operation.get('path')} failed")
    else:
        raise ConfigError(f"patch {source}: unknown op {op!r} (add, remove, replace, move, copy, test)")


def apply_json6902(document: dict[str, Any], operations: list[Any], source: str) -> dict[str, Any]:
    """``document`` after the RFC 6902 ``operations``; raises ConfigError naming ``source`` on a bad path."""
    result = copy.deepcopy(document)
    for operation in operations:
        if not isinstance(operation, dict):
            raise ConfigError(f"patch {source}: each operation must be a mapping with op and path")
        _apply_operation(result, operation, source)
    return result
