"""The environment eventray gives the Ray processes it starts: its defaults where unset, the user's value kept."""

from __future__ import annotations

from cluster.control.node_environment import NODE_ENVIRONMENT, node_environment


def test_the_defaults_fill_only_what_the_environment_leaves_unset() -> None:
    assert node_environment({}) == {"MALLOC_ARENA_MAX": "2"} == NODE_ENVIRONMENT
    assert node_environment({"MALLOC_ARENA_MAX": "8", "PATH": "/bin"}) == {}, "a value the user set is kept"
