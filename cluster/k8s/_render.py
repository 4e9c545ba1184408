"""Render a pipeline config into KubeRay manifests: a RayCluster and a RayJob, as plain dicts.

Rendering is pure (no file or cluster access) and deterministic, so the manifests checked in under
``k8s/`` can be compared byte for byte with a fresh render of their config: configs and manifests
cannot drift apart unnoticed.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from pipelines.config.pipeline import PipelineConfig
from pipelines.errors import ConfigError

from ._conventions import (
    DEFAULT_IMAGE,
    DEFAULT_RAY_AUTH_MODE,
    IMAGE_PROJECT_DIR,
    METRICS_PORT,
    PART_OF_LABEL,
    PIPELINE_LABEL,
    RAY_AUTH_MODES,
    RAY_AUTH_SECRET,
    RAY_VERSION,
    SLOT_RESOURCE,
    RayAuthMode,
)
from ._pods import PodResources, autoscaler_env, head_template, submitter_template, worker_template

__all__ = [
    "ManifestKind",
    "RenderOptions",
    "WorkerBounds",
    "render_manifests",
    "render_raycluster",
    "render_rayjob",
    "worker_bounds",
]

ManifestKind = Literal["rayjob", "raycluster", "all"]
WORKER_GROUP = "slots"


@dataclass(frozen=True)
class RenderOptions:
    """Deployment choices that are not part of the pipeline config.

    ``min_workers``/``max_workers`` of None mean "derive from the config" (see :func:`worker_bounds`).
    ``config_in_image`` of None means ``IMAGE_PROJECT_DIR/configs/<name>.yaml``; ``module`` of None means
    ``cluster.examples.<name>`` (dashes become underscores). ``ray_auth`` is ``token`` (the token from the Secret
    ``eventray-ray-auth``) unless the user opts out with ``disabled``: then anyone who reaches the head's
    ports can submit jobs, that is run code in the cluster. ``secrets`` is the job's ``runtime.secrets``:
    ``environment`` (every Ray container has the Secrets as environment variables, so no secret travels through
    Ray) unless the user says ``driver``.
    """

    image: str = DEFAULT_IMAGE
    min_workers: int | None = None
    max_workers: int | None = None
    slots_per_worker: int = 1
    head: PodResources = field(default_factory=lambda: PodResources(cpu="1", memory="4Gi"))
    worker: PodResources = field(default_factory=lambda: PodResources(cpu="1", memory="2Gi"))
    name: str | None = None
    idle_timeout_s: int = 60
    ttl_after_finished_s: int = 300
    job_retries: int = 2
    config_in_image: str | None = None
    module: str | None = None
    ray_auth: RayAuthMode = DEFAULT_RAY_AUTH_MODE
    secrets: str = "environment"


@dataclass(frozen=True)
class WorkerBounds:
    """Replica bounds of the eventray worker group; the group starts at ``min_replicas``."""

    min_replicas: int
    max_replicas: int


def worker_bounds(config: PipelineConfig, options: RenderOptions) -> WorkerBounds:
    """Worker pod bounds: explicit options first, else from the actors the config asks for / slots per pod:
    1 .. the configured actors, or with ``runtime.autoscale`` its min .. max actors, so the Ray autoscaler
    (KubeRay) can add the pods a scale-out needs and remove them after a scale-in.

    This is the one place that maps a config to bounds. Raises ConfigError when the bounds are inconsistent.
    """
    if options.slots_per_worker < 1:
        raise ConfigError(f"--slots-per-worker must be at least 1, got {options.slots_per_worker}")
    runtime = config.runtime
    stages = len(config.keyed_stages)  # with autoscaling, each keyed stage runs as many aggregate actors
    actors = runtime.source_actors + sum(config.stage_actors)
    fewest = 1
    autoscale = runtime.autoscale
    if autoscale is not None:
        actors = autoscale.max_source_actors + autoscale.max_aggregate_actors * stages
        fewest = math.ceil((autoscale.min_source_actors + autoscale.min_aggregate_actors * stages)
                           / options.slots_per_worker)  # fmt: skip
    low = fewest if options.min_workers is None else options.min_workers
    high = math.ceil(actors / options.slots_per_worker) if options.max_workers is None else options.max_workers
    if low < 0 or high < 1:
        raise ConfigError(
            f"worker bounds must satisfy 0 <= --min-workers and 1 <= --max-workers, got {low} and {high}. "
            "Operator action: pass non-negative --min-workers and a positive --max-workers."
        )
    if low > high:
        raise ConfigError(
            f"--min-workers ({low}) is greater than --max-workers ({high}) for pipeline {config.name!r} "
            f"({actors} actors at {options.slots_per_worker} {SLOT_RESOURCE} per pod). "
            "Operator action: lower --min-workers or raise --max-workers."
        )
    return WorkerBounds(min_replicas=low, max_replicas=high)


def _dns_name(text: str) -> str:
    return text.replace("_", "-")


def _labels(config: PipelineConfig) -> dict[str, str]:
    return {"app.kubernetes.io/name": "eventray", PART_OF_LABEL: "eventray", PIPELINE_LABEL: config.name}


def _slot_param(slots: int) -> str:
    # KubeRay passes rayStartParams to `ray start` through a shell: the JSON keeps its quotes escaped.
    return '"{\\"' + SLOT_RESOURCE + '\\": ' + str(slots) + '}"'


def _worker_group(config: PipelineConfig, options: RenderOptions) -> dict[str, Any]:
    bounds = worker_bounds(config, options)
    return {
        "groupName": WORKER_GROUP,
        "replicas": bounds.min_replicas,
        "minReplicas": bounds.min_replicas,
        "maxReplicas": bounds.max_replicas,
        "rayStartParams": {
            "resources": _slot_param(options.slots_per_worker),
            "metrics-export-port": str(METRICS_PORT),
        },
        "template": worker_template(options.image, options.worker, _labels(config), options.ray_auth),
    }


def _auth_options(mode: RayAuthMode) -> dict[str, Any]:
    """``authOptions``: token mode names our Secret, so KubeRay neither generates one nor picks its name."""
    if mode not in RAY_AUTH_MODES:
        raise ConfigError(f"--ray-auth must be one of {', '.join(RAY_AUTH_MODES)}, got {mode!r}")
    return {"mode": mode, "secretName": RAY_AUTH_SECRET} if mode == "token" else {"mode": mode}


def _autoscaler_options(options: RenderOptions) -> dict[str, Any]:
    autoscaler: dict[str, Any] = {"version": "v2", "upscalingMode": "Default"}
    autoscaler["idleTimeoutSeconds"] = options.idle_timeout_s
    env = autoscaler_env(options.ray_auth)
    if env:
        autoscaler["env"] = env
    autoscaler["resources"] = PodResources(cpu="500m", memory="512Mi").to_manifest()
    return autoscaler


def _cluster_spec(config: PipelineConfig, options: RenderOptions) -> dict[str, Any]:
    """The RayCluster spec shared by the standalone RayCluster and the RayJob's own cluster."""
    head = {
        "rayStartParams": {"num-cpus": "0", "metrics-export-port": str(METRICS_PORT)},
        "template": head_template(options.image, options.head, _labels(config), options.ray_auth),
    }
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "authOptions": _auth_options(options.ray_auth),
        "autoscalerOptions": _autoscaler_options(options),
        "headGroupSpec": head,
        "workerGroupSpecs": [_worker_group(config, options)],
    }


def render_raycluster(config: PipelineConfig, options: RenderOptions) -> dict[str, Any]:
    """A long-running, autoscaling RayCluster sized for ``config`` (submit pipelines to it)."""
    name = options.name or f"eventray-{_dns_name(config.name)}"
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name, "labels": _labels(config)},
        "spec": _cluster_spec(config, options),
    }


def entrypoint_module(config: PipelineConfig, project_dir: Path) -> str:
    """The module a RayJob runs: ``cluster.examples.<name>`` where the pipeline has one in ``project_dir``, else
    ``cluster.job``, the generic entry point that runs any config."""
    own = f"cluster.examples.{config.name.replace('-', '_')}"
    if (project_dir / Path(*own.split("."))).with_suffix(".py").is_file():
        return own
    return "cluster.job"


def _entrypoint(config: PipelineConfig, options: RenderOptions) -> str:
    module = options.module or f"cluster.examples.{config.name.replace('-', '_')}"
    config_path = options.config_in_image or f"{IMAGE_PROJECT_DIR}/configs/{config.name}.yaml"
    return shlex.join(["python", "-m", module, "--config", config_path, "--secrets", options.secrets])


def render_rayjob(config: PipelineConfig, options: RenderOptions) -> dict[str, Any]:
    """A RayJob that runs ``config`` on its own autoscaling cluster, deleted ``ttl`` s after the job ends.

    The code and configs are baked into the image, so the runtime env carries only job-level variables.
    """
    runtime_env = {"env_vars": {"OTEL_SERVICE_NAME": f"eventray-{config.name}"}}
    spec = {
        "entrypoint": _entrypoint(config, options),
        "runtimeEnvYAML": yaml.safe_dump(runtime_env, sort_keys=False),
        "shutdownAfterJobFinishes": True,
        "ttlSecondsAfterFinished": options.ttl_after_finished_s,
        "backoffLimit": options.job_retries,
        "submissionMode": "K8sJobMode",
        "submitterPodTemplate": submitter_template(options.image, _labels(config), options.ray_auth),
        "rayClusterSpec": _cluster_spec(config, options),
    }
    name = options.name or f"eventray-{_dns_name(config.name)}"
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name, "labels": _labels(config)},
        "spec": spec,
    }


def render_manifests(config: PipelineConfig, options: RenderOptions, kind: ManifestKind) -> list[dict[str, Any]]:
    """The manifests of ``kind`` for ``config``; ``all`` is the RayCluster followed by the RayJob."""
    documents: list[dict[str, Any]] = []
    if kind in ("raycluster", "all"):
        documents.append(render_raycluster(config, options))
    if kind in ("rayjob", "all"):
        documents.append(render_rayjob(config, options))
    return documents
