"""Pod templates for the Ray head, the eventray worker group and the RayJob submitter.

Every container gets ``RAY_AUTH_MODE`` explicitly; Ray containers also get the Kafka and checkpoint
variables from their Secrets, and every key of the telemetry ConfigMap (OTEL_* settings). Pod templates
carry ``restartPolicy: Never`` (required by autoscaler v2: a dead Ray pod is replaced, never restarted in
place) and the Prometheus scrape annotations for Ray's metrics port.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._conventions import METRICS_PORT, RAY_AUTH_MODE, SECRET_ENV, TELEMETRY_CONFIGMAP, SecretEnv

__all__ = [
    "PodResources",
    "auth_env",
    "head_template",
    "ray_env",
    "submitter_template",
    "worker_template",
]

_HEAD_PORTS = (("gcs", 6379), ("dashboard", 8265), ("client", 10001), ("metrics", METRICS_PORT))


@dataclass(frozen=True)
class PodResources:
    """CPU and memory of one Ray container; requests equal limits so Ray's accounting matches the pod."""

    cpu: str
    memory: str

    def to_manifest(self) -> dict[str, Any]:
        amounts = {"cpu": self.cpu, "memory": self.memory}
        return {"limits": dict(amounts), "requests": dict(amounts)}


def auth_env() -> list[dict[str, Any]]:
    """The one variable every container gets, Ray or not (autoscaler sidecar, job submitter)."""
    return [{"name": "RAY_AUTH_MODE", "value": RAY_AUTH_MODE}]


def _from_secret(variable: SecretEnv) -> dict[str, Any]:
    selector = {"name": variable.secret, "key": variable.name, "optional": variable.optional}
    return {"name": variable.name, "valueFrom": {"secretKeyRef": selector}}


def ray_env() -> list[dict[str, Any]]:
    """Environment of Ray head and worker containers: auth mode, then the Kafka and checkpoint secrets."""
    return auth_env() + [_from_secret(variable) for variable in SECRET_ENV]


def _pod_metadata(labels: dict[str, str]) -> dict[str, Any]:
    annotations = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(METRICS_PORT),
        "prometheus.io/path": "/metrics",
    }
    return {"labels": dict(labels), "annotations": annotations}


def _ray_container(name: str, image: str, resources: PodResources, ports: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "env": ray_env(),
        "envFrom": [{"configMapRef": {"name": TELEMETRY_CONFIGMAP, "optional": True}}],
        "ports": ports,
        "resources": resources.to_manifest(),
    }


def head_template(image: str, resources: PodResources, labels: dict[str, str]) -> dict[str, Any]:
    """The head pod: GCS, dashboard, client and metrics ports; it runs the job driver, not actors."""
    ports = [{"name": name, "containerPort": port} for name, port in _HEAD_PORTS]
    container = _ray_container("ray-head", image, resources, ports)
    return {"metadata": _pod_metadata(labels), "spec": {"restartPolicy": "Never", "containers": [container]}}


def worker_template(image: str, resources: PodResources, labels: dict[str, str]) -> dict[str, Any]:
    """A worker pod of the eventray slot group; it hosts source and aggregate actors."""
    ports = [{"name": "metrics", "containerPort": METRICS_PORT}]
    container = _ray_container("ray-worker", image, resources, ports)
    return {"metadata": _pod_metadata(labels), "spec": {"restartPolicy": "Never", "containers": [container]}}


def submitter_template(image: str) -> dict[str, Any]:
    """The RayJob submitter pod; KubeRay fills in the ``ray job submit`` command when none is given."""
    container = {
        "name": "ray-job-submitter",
        "image": image,
        "env": auth_env(),
        "resources": PodResources(cpu="200m", memory="256Mi").to_manifest(),
    }
    return {"spec": {"restartPolicy": "Never", "containers": [container]}}
