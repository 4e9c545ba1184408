"""KubeRay operator rules that the CRD schemas do not encode (KubeRay v1.7 ``validation.go``).

The operator checks these when it reconciles, so a manifest that passes ``kubectl apply`` can still be
rejected later, with the error visible only in the operator's events. Each rule here returns
:class:`Violation` records with the field path and the fix; none raises.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from ._tree import Violation, cluster_specs, env_entry, mapping, pod_spec, ray_groups, sequence

__all__ = ["operator_violations"]

# GenerateRayClusterName appends 6 characters to RayJob/RayService names; services append "-serve-svc".
MAX_NAME_LENGTH = {"RayCluster": 53, "RayJob": 47, "RayService": 47}
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_RESOURCE_PARAMS = ("num-cpus", "num-gpus", "memory", "resources")
_AUTOSCALER_V2_ENV = "RAY_enable_autoscaler_v2"
_MIN_TOKEN_AUTH_VERSION = (2, 52, 0)


def _name_violations(document: dict[str, Any]) -> list[Violation]:
    kind = str(document.get("kind"))
    name = mapping(document.get("metadata")).get("name")
    if not isinstance(name, str):
        return []
    found = []
    limit = MAX_NAME_LENGTH[kind]
    if len(name) > limit:
        found.append(Violation("metadata.name", f"{kind} name {name!r} has {len(name)} characters; max {limit}"))
    if not _DNS_1035.match(name):
        found.append(Violation("metadata.name", f"{name!r} is not a DNS-1035 label ([a-z]([-a-z0-9]*[a-z0-9])?)"))
    return found


def label_violations(labels: Any, path: str) -> list[Violation]:
    """Kubernetes label syntax: ``[prefix/]name`` keys and values of at most 63 characters."""
    found = []
    for key, value in mapping(labels).items():
        prefix, _, name = str(key).rpartition("/")
        if (prefix and (len(prefix) > 253 or not _DNS_1123_SUBDOMAIN.match(prefix))) or not (
            len(name) <= 63 and _LABEL_NAME.match(name)
        ):
            found.append(Violation(f"{path}.{key}", "invalid label key ([prefix/]name, name of at most 63 chars)"))
        text = str(value)
        if text and not (len(text) <= 63 and _LABEL_NAME.match(text)):
            found.append(Violation(f"{path}.{key}", f"invalid label value {text!r} (alphanumeric at both ends)"))
    return found


def _group_violations(group: dict[str, Any], path: str, name: str) -> list[Violation]:
    """Rules shared by the head group and every worker group."""
    found = []
    if not sequence(pod_spec(group).get("containers")):
        found.append(Violation(f"{path}.template.spec.containers", f"{name} group needs at least one container"))
    params = mapping(group.get("rayStartParams"))
    if any(params.get(key) for key in _RESOURCE_PARAMS) and mapping(group.get("resources")):
        found.append(
            Violation(f"{path}.resources", f"{name}: set resources in rayStartParams or in resources, not both")
        )
    if "labels" in params:
        found.append(Violation(f"{path}.rayStartParams.labels", "not supported; use the group's labels field"))
    found += label_violations(group.get("labels"), f"{path}.labels")
    found += label_violations(mapping(mapping(group.get("template")).get("metadata")).get("labels"), path)
    return found


def _replica_violations(group: dict[str, Any], path: str, autoscaling: bool) -> list[Violation]:
    low, high, replicas = group.get("minReplicas"), group.get("maxReplicas"), group.get("replicas")
    if not autoscaling and (low is None or high is None):
        return [Violation(path, "minReplicas and maxReplicas are both required when autoscaling is disabled")]
    found = []
    for field, value in (("minReplicas", low), ("maxReplicas", high)):
        if isinstance(value, int) and value < 0:
            found.append(Violation(f"{path}.{field}", f"must not be negative, got {value}"))
    low_n = low if isinstance(low, int) else 0
    high_n = high if isinstance(high, int) else 2**31 - 1
    if low_n > high_n:
        found.append(Violation(f"{path}.minReplicas", f"minReplicas ({low_n}) > maxReplicas ({high_n})"))
    elif isinstance(replicas, int) and not low_n <= replicas <= high_n:
        found.append(
            Violation(
                f"{path}.replicas",
                f"replicas ({replicas}) must be within minReplicas..maxReplicas ({low_n}..{high_n})",
            )
        )
    return found


def _autoscaler_v2(spec: dict[str, Any]) -> bool:
    version = mapping(spec.get("autoscalerOptions")).get("version")
    if version is not None:
        return bool(version == "v2")
    head_containers = sequence(pod_spec(mapping(spec.get("headGroupSpec"))).get("containers"))
    entry = env_entry(mapping(head_containers[0]).get("env"), _AUTOSCALER_V2_ENV) if head_containers else None
    return entry is not None and entry.get("value") in ("1", "true")


def _restart_policy_violations(spec: dict[str, Any], path: str) -> list[Violation]:
    found = []
    for group_path, group in ray_groups(spec, path):
        policy = pod_spec(group).get("restartPolicy")
        if policy != "Never":
            found.append(
                Violation(
                    f"{group_path}.template.spec.restartPolicy",
                    f"must be Never with autoscaler v2 (pods are replaced, not restarted), got {policy!r}",
                )
            )
    return found


def _autoscaling_violations(spec: dict[str, Any], path: str) -> list[Violation]:
    options = mapping(spec.get("autoscalerOptions"))
    workers = [mapping(g) for g in sequence(spec.get("workerGroupSpecs"))]
    found = []
    idle = options.get("idleTimeoutSeconds")
    if isinstance(idle, int) and idle < 0:
        found.append(Violation(f"{path}.autoscalerOptions.idleTimeoutSeconds", f"must not be negative, got {idle}"))
    if not spec.get("enableInTreeAutoscaling"):
        return found
    for index, group in enumerate(workers):
        if group.get("suspend"):
            found.append(Violation(f"{path}.workerGroupSpecs[{index}].suspend", "cannot suspend with autoscaling"))
        if group.get("idleTimeoutSeconds") is not None and not _autoscaler_v2(spec):
            found.append(Violation(f"{path}.workerGroupSpecs[{index}].idleTimeoutSeconds", "needs autoscaler v2"))
    if _autoscaler_v2(spec):
        found += _restart_policy_violations(spec, path)
    return found


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def _auth_violations(spec: dict[str, Any], path: str) -> list[Violation]:
    if mapping(spec.get("authOptions")).get("mode") != "token":
        return []
    version = str(spec.get("rayVersion", ""))
    if not version or _version_tuple(version) < _MIN_TOKEN_AUTH_VERSION:
        return [Violation(f"{path}.rayVersion", f"authOptions.mode token needs rayVersion >= 2.52.0, got {version!r}")]
    return []


def cluster_spec_violations(spec: dict[str, Any], path: str) -> list[Violation]:
    """Operator rules for one RayCluster spec found at ``path``."""
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    found = _group_violations(mapping(spec.get("headGroupSpec")), f"{path}.headGroupSpec", "head")
    names: set[str] = set()
    for index, raw in enumerate(sequence(spec.get("workerGroupSpecs"))):
        group, group_path = mapping(raw), f"{path}.workerGroupSpecs[{index}]"
        name = str(group.get("groupName", ""))
        if not name or name in names:
            found.append(Violation(f"{group_path}.groupName", f"must be set and unique, got {name!r}"))
        names.add(name)
        found += _group_violations(group, group_path, name or f"worker group {index}")
        found += _replica_violations(group, group_path, autoscaling)
    return found + _autoscaling_violations(spec, path) + _auth_violations(spec, path)


def _runtime_env_violations(spec: dict[str, Any]) -> list[Violation]:
    text = spec.get("runtimeEnvYAML")
    if text is None:
        return []
    try:
        parsed = yaml.safe_load(str(text))
    except yaml.YAMLError as error:
        return [Violation("spec.runtimeEnvYAML", f"is not valid YAML: {error}")]
    if parsed is not None and not isinstance(parsed, dict):
        return [Violation("spec.runtimeEnvYAML", "must be a YAML mapping (pip, env_vars, working_dir, ...)")]
    return []


def _deletion_violations(spec: dict[str, Any]) -> list[Violation]:
    found = []
    ttl = spec.get("ttlSecondsAfterFinished", 0)
    shutdown = bool(spec.get("shutdownAfterJobFinishes"))
    if isinstance(ttl, int) and ttl < 0:
        found.append(Violation("spec.ttlSecondsAfterFinished", f"must not be negative, got {ttl}"))
    if isinstance(ttl, int) and ttl > 0 and not shutdown:
        found.append(Violation("spec.ttlSecondsAfterFinished", "needs shutdownAfterJobFinishes: true"))
    if spec.get("suspend") and not shutdown:
        found.append(Violation("spec.suspend", "a suspended RayJob needs shutdownAfterJobFinishes: true"))
    return found


def _submission_violations(spec: dict[str, Any]) -> list[Violation]:
    mode = spec.get("submissionMode", "K8sJobMode")
    retries = spec.get("backoffLimit")
    found = []
    if isinstance(retries, int) and retries < 0:
        found.append(Violation("spec.backoffLimit", f"must not be negative, got {retries}"))
    if mode == "InteractiveMode" and isinstance(retries, int) and retries > 0:
        found.append(Violation("spec.backoffLimit", "InteractiveMode does not support retries"))
    if mode == "SidecarMode" and ("submitterPodTemplate" in spec or "submitterConfig" in spec):
        found.append(
            Violation("spec.submissionMode", "SidecarMode supports neither submitterPodTemplate nor submitterConfig")
        )
    policy = mapping(mapping(spec.get("submitterPodTemplate")).get("spec")).get("restartPolicy")
    if "submitterPodTemplate" in spec and policy not in ("Never", "OnFailure"):
        found.append(Violation("spec.submitterPodTemplate.spec.restartPolicy", "a Job pod needs Never or OnFailure"))
    deadline = spec.get("activeDeadlineSeconds")
    if isinstance(deadline, int) and deadline <= 0:
        found.append(Violation("spec.activeDeadlineSeconds", f"must be positive, got {deadline}"))
    return found


def _job_violations(spec: dict[str, Any]) -> list[Violation]:
    found = _deletion_violations(spec) + _submission_violations(spec) + _runtime_env_violations(spec)
    selector = mapping(spec.get("clusterSelector"))
    if not selector and "rayClusterSpec" not in spec:
        found.append(Violation("spec", "one of rayClusterSpec or clusterSelector must be set"))
    if selector and not selector.get("ray.io/cluster"):
        found.append(Violation("spec.clusterSelector", "needs a non-empty ray.io/cluster entry"))
    return found


def operator_violations(document: dict[str, Any]) -> list[Violation]:
    """Every KubeRay operator rule broken by a RayCluster, RayJob or RayService document."""
    found = _name_violations(document) + label_violations(
        mapping(document.get("metadata")).get("labels"), "metadata.labels"
    )
    if document.get("kind") == "RayJob":
        found += _job_violations(mapping(document.get("spec")))
    for path, spec in cluster_specs(document):
        found += cluster_spec_violations(spec, path)
    return found
