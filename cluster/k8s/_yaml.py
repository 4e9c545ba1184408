"""Reading and writing Kubernetes YAML: multi-document files, block style, literal multi-line strings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from pipelines.errors import ConfigError

__all__ = ["load_documents", "parse_documents", "to_yaml"]


class _ManifestDumper(yaml.SafeDumper):
    """Indents lists under their key and writes multi-line strings as ``|`` blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ManifestDumper.add_representer(str, _represent_str)


def to_yaml(documents: Iterable[Mapping[str, Any]], header: str = "") -> str:
    """Serialise ``documents`` as one multi-document YAML text, keys in insertion order.

    ``header`` lines (without ``#``) become a comment block at the top.
    """
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    bodies = [yaml.dump(dict(doc), Dumper=_ManifestDumper, sort_keys=False, width=110) for doc in documents]
    return comment + "---\n".join(bodies)


def parse_documents(text: str, source: str) -> list[Any]:
    """The non-empty documents of a YAML text; raises ConfigError naming ``source`` if it does not parse."""
    try:
        return [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        raise ConfigError(f"{source} is not valid YAML: {error}") from None


def load_documents(path: Path) -> list[Any]:
    """The non-empty documents of a YAML file; raises ConfigError if it is missing or does not parse."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"manifest file {path} does not exist") from None
    return parse_documents(text, str(path))
