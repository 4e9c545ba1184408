"""The environment eventray gives every process of a Ray node it starts or describes.

Set for an embedded Ray (:func:`cluster.control.ray_runtime.connect`) and the tests' ``ray start`` where the
environment does not set it already, and written into the Ray containers of ``eventray k8s render`` (edit the
manifest for another value). Export it before your own ``ray start``, as Hadoop sets ``MALLOC_ARENA_MAX=4`` for
its containers.

``MALLOC_ARENA_MAX=2``: two glibc malloc arenas per process instead of 8 per core. Each recovery makes the
Supervisor allocate and free a few hundred KiB in Ray's core worker, from a dozen threads; the chunks freed
stayed in many arenas, and ``malloc_trim`` cannot give a page back while a chunk in use shares it
(``cluster/control/freed_memory.py``). Measured in soaks with a kill every 15 s: about 325 KiB of RSS a recovery
without either fix, 180 KiB with the trim alone, 30 KiB with the trim and two arenas. glibc reads the limit as a
process starts, and a Ray worker has all 16 arenas of a 2-core machine before an actor's constructor runs, so a
``mallopt`` in the Supervisor comes too late; a Ray runtime environment for the Supervisor alone made each of its
starts 3.5 s slower.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["NODE_ENVIRONMENT", "node_environment"]

NODE_ENVIRONMENT: Mapping[str, str] = MappingProxyType({"MALLOC_ARENA_MAX": "2"})


def node_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables of :data:`NODE_ENVIRONMENT` that ``environ`` does not set (a value set there is kept)."""
    return {name: value for name, value in NODE_ENVIRONMENT.items() if name not in environ}
