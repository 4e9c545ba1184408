"""User code named by an import path in a config (``package.module:ClassName``), loaded when an operator is built."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from pipelines.errors import ConfigError

__all__ = ["import_user_attribute", "load_user_object"]


def import_user_attribute(path: str, what: str) -> Any:
    """The attribute ``module:attr`` names (``attr`` may be dotted). Raises :class:`ConfigError` naming ``what``
    and the path when it cannot be imported, or when the module raised as it was imported."""
    module_name, _, attribute_path = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute_path.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"{what} {path!r} cannot be imported: {error}") from None
    except ConfigError:
        raise
    except Exception as error:  # noqa: BLE001 - user code ran as it was imported: say whose and how
        raise ConfigError(f"{what} {path!r} failed as it was imported: {type(error).__name__}: {error}") from None
    return target


def load_user_object(path: str, what: str, methods: tuple[str, ...], options: Mapping[str, Any] | None = None) -> Any:
    """Import ``module:attr``, call it with ``options`` as keyword arguments (none by default) and return the
    object, which must have ``methods``.

    Raises :class:`ConfigError` naming ``what`` and the path when the module, the attribute or a method is
    missing, or the attribute is not callable.
    """
    target = import_user_attribute(path, what)
    if not callable(target):
        raise ConfigError(f"{what} {path!r} is not callable: name a class or a zero-argument factory")
    try:
        made = target(**(options or {}))
    except Exception as error:  # noqa: BLE001 - user code: say whose call failed and how
        raise ConfigError(
            f"{what} {path!r} could not be made{f' with options {dict(options)}' if options else ''}: calling it "
            f"raised {type(error).__name__}: {error}"
        ) from None
    missing = [f"{name}()" for name in methods if not callable(getattr(made, name, None))]
    if missing:
        raise ConfigError(f"{what} {path!r} made an object without {' and '.join(missing)} method(s)")
    return made
