"""Strict JSON-schema validation of manifests against the KubeRay v1 CRD schemas.

The CRD ``openAPIV3Schema`` documents are made strict before use: an object schema with ``properties``
and no ``additionalProperties`` (and no ``x-kubernetes-preserve-unknown-fields``) rejects unknown keys,
which is what catches a misspelled field that the API server would silently drop. ``nullable`` becomes
a ``null`` type, and ``x-kubernetes-list-map-keys`` lists must have unique keys (duplicate env names,
container names, ports), as the API server enforces.

A few non-Ray kinds that eventray ships (ConfigMap, PodMonitor, NetworkPolicy) are checked against small
built-in schemas covering the fields eventray uses (:mod:`._builtin_schemas`); any other kind is reported
as unknown.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator, ValidationError, validators

from pipelines.errors import ConfigError

from ._builtin_schemas import BUILTIN_SCHEMAS, OBJECT_META
from ._tree import Violation, format_path, mapping

__all__ = ["SchemaSet", "find_schema_dir", "load_schema_set", "make_strict"]

CRD_SCHEMA_FILES = {
    "RayCluster": "raycluster_v1.json",
    "RayJob": "rayjob_v1.json",
    "RayService": "rayservice_v1.json",
}
_SUBSCHEMA_KEYS = ("items", "additionalProperties", "not")
_SUBSCHEMA_LIST_KEYS = ("anyOf", "allOf", "oneOf")


def make_strict(schema: Any) -> Any:
    """A copy of ``schema`` in which objects with declared properties reject unknown keys.

    Only schema keywords are walked (``properties``, ``items``, ``additionalProperties``, ``anyOf``, ...),
    so defaults, enums and CEL rules are copied untouched.
    """
    if not isinstance(schema, dict):
        return schema
    strict = dict(schema)
    if "properties" in schema:
        strict["properties"] = {name: make_strict(sub) for name, sub in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in schema:
            strict["additionalProperties"] = False
    for key in _SUBSCHEMA_KEYS:
        if isinstance(schema.get(key), dict):
            strict[key] = make_strict(schema[key])
    for key in _SUBSCHEMA_LIST_KEYS:
        if isinstance(schema.get(key), list):
            strict[key] = [make_strict(sub) for sub in schema[key]]
    if schema.get("nullable") and isinstance(schema.get("type"), str):
        strict["type"] = [schema["type"], "null"]
    return strict


def _crd_document_schema(raw: dict[str, Any], kind: str) -> dict[str, Any]:
    """The strict schema of a whole ``ray.io/v1`` document; the CRD leaves ``metadata`` free-form."""
    strict: dict[str, Any] = make_strict(raw)
    strict["properties"]["apiVersion"] = {"const": "ray.io/v1"}
    strict["properties"]["kind"] = {"const": kind}
    strict["properties"]["metadata"] = make_strict(OBJECT_META)
    strict["required"] = sorted({*raw.get("required", []), "apiVersion", "kind", "metadata", "spec"})
    return strict


def _unique_list_map_keys(
    validator: Any, keys: list[str], instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """The API server's rule for ``x-kubernetes-list-type: map`` lists: no two items share their keys."""
    if not isinstance(instance, list):
        return
    item_schema = mapping(mapping(schema.get("items")).get("properties"))
    defaults = {key: mapping(item_schema.get(key)).get("default") for key in keys}
    seen: set[str] = set()
    for item in instance:
        if not isinstance(item, dict):
            continue
        identity = {key: item.get(key, defaults[key]) for key in keys}
        text = json.dumps(identity, sort_keys=True)
        if text in seen:
            yield ValidationError(f"duplicate entry {identity}: items of this list must differ in {keys}")
        seen.add(text)


_KubernetesValidator = validators.extend(Draft7Validator, {"x-kubernetes-list-map-keys": _unique_list_map_keys})


def _describe(error: ValidationError) -> list[Violation]:
    """One violation per offending field; unknown keys get the closest known name as a hint."""
    path = list(error.absolute_path)
    if error.validator != "additionalProperties" or not isinstance(error.instance, dict):
        return [Violation(format_path(path), error.message)]
    known = list(error.schema.get("properties", {}))
    found = []
    for field in sorted(set(error.instance) - set(known)):
        close = difflib.get_close_matches(field, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else f"; allowed here: {', '.join(sorted(known))}"
        found.append(Violation(format_path([*path, field]), f"unknown field{hint}"))
    return found


@dataclass(frozen=True)
class SchemaSet:
    """Strict validators by ``kind``; :meth:`check` lists the violations of one manifest."""

    validators: Mapping[str, Any]

    def knows(self, kind: str) -> bool:
        return kind in self.validators

    def check(self, document: Mapping[str, Any]) -> list[Violation]:
        """Every schema violation of ``document`` (empty when valid); its ``kind`` must be known."""
        validator = self.validators[str(document.get("kind"))]
        errors = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
        return [violation for error in errors for violation in _describe(error)]


BUNDLED_SCHEMA_DIR = Path(__file__).with_name("crds")
"""The KubeRay v1.7.0 CRD schemas shipped with eventray (package data, see ``crds/README.md``)."""


def find_schema_dir() -> Path:
    """The KubeRay schema folder shipped inside the package, so any checkout or install validates."""
    if all((BUNDLED_SCHEMA_DIR / name).is_file() for name in CRD_SCHEMA_FILES.values()):
        return BUNDLED_SCHEMA_DIR
    raise ConfigError(
        f"the KubeRay CRD schemas are missing from the installed package ({BUNDLED_SCHEMA_DIR}). "
        "Operator action: reinstall eventray, or pass --schemas DIR with raycluster_v1.json, rayjob_v1.json "
        "and rayservice_v1.json."
    )


def load_schema_set(schema_dir: Path) -> SchemaSet:
    """Strict validators for the KubeRay kinds (from ``schema_dir``) and eventray's built-in kinds."""
    loaded: dict[str, Any] = {}
    for kind, file_name in CRD_SCHEMA_FILES.items():
        path = schema_dir / file_name
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            raise ConfigError(
                f"cannot read KubeRay schema {path}: {error}. Operator action: check --schemas."
            ) from None
        loaded[kind] = _KubernetesValidator(_crd_document_schema(raw, kind))
    for kind, schema in BUILTIN_SCHEMAS.items():
        loaded[kind] = _KubernetesValidator(make_strict(schema))
    return SchemaSet(validators=loaded)
