"""What the ``eventray <service> up|down|status`` commands of the dev services share: their config from the
command line, and paths shown short."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

__all__ = ["config_from_args", "display_path"]

ConfigT = TypeVar("ConfigT", bound=BaseModel)


def config_from_args(config_type: type[ConfigT], args: argparse.Namespace, **fields: object) -> ConfigT:
    """A ``config_type`` from ``fields``, with ``args.state_dir`` (``--state-dir``, None when not given) on top.

    Validated like any other config: raises ``pydantic.ValidationError`` as ``model_validate`` does.
    """
    if args.state_dir is not None:
        fields["state_dir"] = args.state_dir
    return config_type.model_validate(fields)


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is inside it, for short messages."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
