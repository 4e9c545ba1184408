"""How the Supervisor names its actors: ``<slot>-<run id>-<attempt>`` (``aggregate-0-5f3a2c-1``), with ``-r<n>``
after it for an actor the n-th rescale added. The run id is 6 hex digits, with ``s<n>`` after it once the
Supervisor was replaced n times (``cluster/control/runner.py``); the attempt counts the topologies the Supervisor
started (each recovery starts the next, a rescale keeps it). The slot stays when a recovery replaces the process.
Ray names an actor ``<pipeline>-<actor id>``."""

from __future__ import annotations

import re

__all__ = ["ACTOR_ID", "topology_suffix"]

ACTOR_ID = re.compile(r"^(?P<slot>.+?)-(?P<run>[0-9a-f]{6}(?:s\d+)?)-(?P<attempt>\d+)(?:-r\d+)?$")


def topology_suffix(run_id: str, attempt: int, rescale: int | None = None) -> str:
    """What the actor ids of one topology end with (after a rescale: the actors that rescale added)."""
    return f"{run_id}-{attempt}" if rescale is None else f"{run_id}-{attempt}-r{rescale}"
