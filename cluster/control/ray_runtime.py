"""Connecting to Ray: embedded (a local instance started here) or an existing cluster.

``RAY_AUTH_MODE`` must be the same for every process of a cluster (ARCHITECTURE.md section 7). It is read and defaulted
here, once, before Ray starts: ``token`` unless the environment says otherwise (``cluster/control/ray_auth.py``).
"""

from __future__ import annotations

import logging
import os

import ray

from cluster.control.node_environment import node_environment
from cluster.control.ray_auth import check_cluster_accepts, prepare_ray_auth, refresh_ray_auth

__all__ = ["RayConnection", "connect"]

NAMESPACE = "eventray"


class RayConnection:
    """A connection made by :func:`connect`; :meth:`close` shuts down only what this process started."""

    def __init__(self, embedded: bool, address: str | None) -> None:
        self.embedded = embedded
        self.address = address

    def close(self) -> None:
        if ray.is_initialized():
            ray.shutdown()


def connect(address: str | None = None, num_cpus: int | None = None) -> RayConnection:
    """Start an embedded Ray (``address`` None and no ``RAY_ADDRESS``) or join the cluster at ``address``.

    Inside ``ray job submit`` the job's environment carries ``RAY_ADDRESS``, so the default joins that cluster.
    An embedded Ray's processes inherit this one's environment: the variables of
    :mod:`cluster.control.node_environment` that it does not set are added to ``os.environ`` for good (this
    process read its own malloc settings as it started; subprocesses it starts later get them too).
    """
    if ray.is_initialized():
        return RayConnection(embedded=False, address=address)
    joining = address is not None or "RAY_ADDRESS" in os.environ
    prepare_ray_auth(os.environ, embedded=not joining)
    refresh_ray_auth()
    if joining:
        check_cluster_accepts(address or os.environ["RAY_ADDRESS"], os.environ)
        ray.init(address=address, namespace=NAMESPACE, logging_level=logging.WARNING)
    else:
        # for the processes Ray starts (cluster/control/node_environment.py); this one read its own as it started
        os.environ.update(node_environment(os.environ))
        # "local": always a new instance; a bare init() would join whatever `ray start` left in
        # /tmp/ray/ray_current_cluster, even a cluster that is gone.
        ray.init(
            address="local",
            include_dashboard=False,
            num_cpus=num_cpus,
            namespace=NAMESPACE,
            logging_level=logging.WARNING,
        )
    return RayConnection(embedded=not joining, address=address)
