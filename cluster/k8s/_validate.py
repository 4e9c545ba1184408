"""Validate manifests: strict KubeRay CRD schema, KubeRay operator rules, eventray's rules.

Ray kinds get the operator's and eventray's rules, a NetworkPolicy the Ray head's port rules, and every
document the check for a literal Ray auth token.

Validation never raises for a bad manifest: it returns :class:`Problem` records, each naming the file
(or kustomization) and document, the field path and the fix. It raises ConfigError only when it cannot
run at all (schemas missing, a kustomization it cannot build, YAML that does not parse).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._auth_rules import literal_token_violations
from ._eventray_rules import eventray_violations
from ._kustomize import build_kustomization, find_kustomization_roots, referenced_files
from ._network_rules import network_policy_violations
from ._operator_rules import operator_violations
from ._schema import SchemaSet
from ._tree import Violation, mapping
from ._yaml import load_documents

__all__ = ["Problem", "validate_documents", "validate_paths"]

RAY_KINDS = ("RayCluster", "RayJob", "RayService")
_MANIFEST_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Problem:
    """One reason a manifest would be rejected or misbehave: where it is, which field, what to do."""

    source: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.path}: {self.message}"


def _violations(document: dict[str, Any], schemas: SchemaSet, project_dir: Path) -> list[Violation]:
    kind = str(document.get("kind"))
    if not schemas.knows(kind):
        known = ", ".join(sorted(schemas.validators))
        return [Violation("kind", f"unknown kind {kind!r}; eventray validates {known}")]
    found = schemas.check(document)
    if kind in RAY_KINDS:
        found += operator_violations(document) + eventray_violations(document, project_dir)
    elif kind == "NetworkPolicy":
        found += network_policy_violations(document)
    return found + literal_token_violations(document)


def validate_documents(
    documents: Sequence[Any], *, source: str, schemas: SchemaSet, project_dir: Path
) -> list[Problem]:
    """Every problem of ``documents`` (parsed YAML); ``source`` names where they came from in messages.

    ``project_dir`` is the tree the image is built from: RayJob entrypoints must name modules and configs
    that exist there.
    """
    problems = []
    for index, document in enumerate(documents):
        if not isinstance(document, dict):
            problems.append(Problem(f"{source}[{index}]", "(document)", "is not a mapping"))
            continue
        name = mapping(document.get("metadata")).get("name", "?")
        where = f"{source}[{index}] {document.get('kind')}/{name}"
        problems += [Problem(where, v.path, v.message) for v in _violations(document, schemas, project_dir)]
    return problems


def _display(path: Path, project_dir: Path) -> str:
    resolved = path.resolve()
    return (
        str(resolved.relative_to(project_dir.resolve()))
        if resolved.is_relative_to(project_dir.resolve())
        else str(path)
    )


def validate_paths(paths: Sequence[Path], *, schemas: SchemaSet, project_dir: Path) -> list[Problem]:
    """Validate YAML files and directories.

    A directory is searched for kustomizations: each is built (as ``kustomize build`` would) and its
    output validated; YAML files that no kustomization reads are validated as plain manifests.
    """
    problems: list[Problem] = []
    for path in paths:
        roots = find_kustomization_roots(path)
        claimed: set[Path] = set()
        for root in roots:
            claimed |= referenced_files(root)
            source = f"{_display(root, project_dir)} (kustomize build)"
            problems += validate_documents(
                build_kustomization(root), source=source, schemas=schemas, project_dir=project_dir
            )
        files = sorted(p for p in path.rglob("*") if p.suffix in _MANIFEST_SUFFIXES) if path.is_dir() else [path]
        for file in (f for f in files if f.resolve() not in claimed):
            problems += validate_documents(
                load_documents(file),
                source=_display(file, project_dir),
                schemas=schemas,
                project_dir=project_dir,
            )
    return problems
