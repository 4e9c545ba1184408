"""Pod templates for the Ray head, the eventray worker group and the RayJob submitter.

Every container gets ``RAY_AUTH_MODE`` explicitly. ``RAY_AUTH_TOKEN`` is left to KubeRay, which in token mode
adds it (from ``authOptions.secretName``, key ``auth_token``) to each container written here, see
:func:`auth_env`. Ray containers also get the Kafka and checkpoint variables from their Secrets, every
key of the telemetry ConfigMap (OTEL_* settings) and ``MALLOC_ARENA_MAX`` (:func:`ray_env`). Ray pod
templates carry ``restartPolicy: Never`` (required by autoscaler v2: a dead Ray pod is replaced, never restarted
in place) and the Prometheus scrape annotations for Ray's metrics port; the submitter pod carries the label that
lets it reach the jobs API through the head's NetworkPolicy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cluster.control.node_environment import NODE_ENVIRONMENT

from ._conventions import (
    HEAD_PORTS,
    METRICS_PORT,
    RAY_CLIENT_LABEL,
    SECRET_ENV,
    TELEMETRY_CONFIGMAP,
    RayAuthMode,
    SecretEnv,
)

__all__ = [
    "PodResources",
    "auth_env",
    "autoscaler_env",
    "head_template",
    "ray_env",
    "submitter_template",
    "worker_template",
]


@dataclass(frozen=True)
class PodResources:
    """CPU and memory of one Ray container; requests equal limits so Ray's accounting matches the pod."""

    cpu: str
    memory: str

    def to_manifest(self) -> dict[str, Any]:
        amounts = {"cpu": self.cpu, "memory": self.memory}
        return {"limits": dict(amounts), "requests": dict(amounts)}


def auth_env(mode: RayAuthMode) -> list[dict[str, Any]]:
    """``RAY_AUTH_MODE`` for the head, worker and submitter containers; in token mode KubeRay adds the token.

    KubeRay v1.7 adds each auth variable only when absent (common/pod.go SetContainerTokenAuthEnvVars), so
    this explicit mode is kept and the token it injects from the Secret is never duplicated.
    """
    return [{"name": "RAY_AUTH_MODE", "value": mode}]


def autoscaler_env(mode: RayAuthMode) -> list[dict[str, Any]]:
    """``autoscalerOptions.env``: nothing in token mode, since KubeRay injects RAY_AUTH_MODE and RAY_AUTH_TOKEN
    into the sidecar itself and then appends this list (pod.go mergeAutoscalerOverrides), which would repeat
    them; with auth disabled KubeRay injects nothing, so the mode is set here."""
    return [] if mode == "token" else auth_env(mode)


def _from_secret(variable: SecretEnv) -> dict[str, Any]:
    selector = {"name": variable.secret, "key": variable.name, "optional": variable.optional}
    return {"name": variable.name, "valueFrom": {"secretKeyRef": selector}}


def ray_env(mode: RayAuthMode) -> list[dict[str, Any]]:
    """Environment of Ray head and worker containers: auth mode, the Kafka and checkpoint secrets, then what every
    process of an eventray Ray node gets (``cluster/control/node_environment.py``)."""
    secrets = [_from_secret(variable) for variable in SECRET_ENV]
    return auth_env(mode) + secrets + [{"name": name, "value": value} for name, value in NODE_ENVIRONMENT.items()]


def _pod_metadata(labels: dict[str, str]) -> dict[str, Any]:
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    return {"labels": dict(labels), "annotations": annotations}


def _ray_container(
    name: str, image: str, resources: PodResources, ports: list[dict[str, Any]], auth: RayAuthMode
) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "env": ray_env(auth),
        "envFrom": [{"configMapRef": {"name": TELEMETRY_CONFIGMAP, "optional": True}}],
        "ports": ports,
        "resources": resources.to_manifest(),
    }


def head_template(image: str, resources: PodResources, labels: dict[str, str], auth: RayAuthMode) -> dict[str, Any]:
    """The head pod: GCS, dashboard, client and metrics ports; it runs the job driver, not actors."""
    ports = [{"name": name, "containerPort": port} for name, port in HEAD_PORTS.items()]
    container = _ray_container("ray-head", image, resources, ports, auth)
    return {"metadata": _pod_metadata(labels), "spec": {"restartPolicy": "Never", "containers": [container]}}


def worker_template(image: str, resources: PodResources, labels: dict[str, str], auth: RayAuthMode) -> dict[str, Any]:
    """A worker pod of the eventray slot group; it hosts source and aggregate actors."""
    ports = [{"name": "metrics", "containerPort": METRICS_PORT}]
    container = _ray_container("ray-worker", image, resources, ports, auth)
    return {"metadata": _pod_metadata(labels), "spec": {"restartPolicy": "Never", "containers": [container]}}


def submitter_template(image: str, labels: dict[str, str], auth: RayAuthMode) -> dict[str, Any]:
    """The RayJob submitter pod; KubeRay fills in the ``ray job submit`` command when none is given.

    It is labelled as a Ray client: the head's NetworkPolicy admits only such pods to the jobs API.
    """
    container = {
        "name": "ray-job-submitter",
        "image": image,
        "env": auth_env(auth),
        "resources": PodResources(cpu="200m", memory="256Mi").to_manifest(),
    }
    metadata = {"labels": {**labels, RAY_CLIENT_LABEL: "true"}}
    return {"metadata": metadata, "spec": {"restartPolicy": "Never", "containers": [container]}}
