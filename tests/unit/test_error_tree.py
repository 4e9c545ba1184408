"""Every exception eventray defines is under EventrayError, drawn in pipelines/errors.py under its parent, and
survives the pickle round trip that carries it across actors."""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import re

import pytest

import actors
import cluster
import pipelines
from pipelines import errors
from pipelines.errors import EventrayError


def defined_exceptions() -> dict[str, type[BaseException]]:
    """Every public exception class defined in the three packages, by name."""
    found: dict[str, type[BaseException]] = {}
    for package in (pipelines, actors, cluster):
        for module_info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if module_info.name.endswith("__main__"):
                continue
            module = importlib.import_module(module_info.name)
            for name, value in vars(module).items():
                is_error = inspect.isclass(value) and issubclass(value, BaseException)
                if is_error and value.__module__ == module.__name__ and not name.startswith("_"):
                    found[name] = value
    return found


def drawn_parents() -> dict[str, str]:
    """Each class of the drawing in pipelines/errors.py with the class drawn above it at one level less."""
    assert errors.__doc__ is not None
    parents: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    for line in errors.__doc__.splitlines():
        match = re.match(r"^(    (?:[│ ]   )*(?:[├└]── )?)([A-Z]\w+)\s", line + " ")  # the drawing is indented
        if not match:
            continue
        depth = len(match.group(1))
        while stack and stack[-1][0] >= depth:
            stack.pop()
        if stack:
            parents[match.group(2)] = stack[-1][1]
        stack.append((depth, match.group(2)))
    return parents


EXCEPTIONS = defined_exceptions()


def test_every_exception_is_an_eventray_error_drawn_under_its_parent() -> None:
    parents = drawn_parents()
    for name, error in EXCEPTIONS.items():
        assert issubclass(error, EventrayError), f"{error.__module__}.{name} is outside the tree"
        if error is EventrayError:
            continue
        assert name in parents, f"{name} is not drawn in pipelines/errors.py"
        assert parents[name] == error.__mro__[1].__name__, f"{name} is drawn under {parents[name]}"
    assert set(parents) == set(EXCEPTIONS) - {"EventrayError"}, "the drawing names no class that does not exist"


@pytest.mark.parametrize("name", sorted(EXCEPTIONS))
def test_every_exception_survives_a_pickle_round_trip(name: str) -> None:
    error = EXCEPTIONS[name]("what went wrong. Operator action: fix it")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
