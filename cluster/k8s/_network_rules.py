"""eventray's rules for a NetworkPolicy of the Ray head: it selects the head, and its ports are the head's.

eventray ships one NetworkPolicy, so every NetworkPolicy is checked as the head's. It is a static file
(``k8s/base/networkpolicy-ray-head.yaml``) while the head's ports come from the renderer (``HEAD_PORTS``);
these rules keep the two in step. They report a policy that does not select the
Ray head, a rule open to every source, a port the head does not listen on, GCS or Ray's other internal ports
(a rule without ``ports``) open to anything but Ray pods, and a head port nobody may reach: workers need GCS,
Ray clients (``eventray.io/ray-client: "true"``) the jobs API and the Ray client port, Prometheus the
metrics port.
"""

from __future__ import annotations

from typing import Any

from ._conventions import HEAD_PORTS, PART_OF_LABEL, RAY_CLIENT_LABEL
from ._tree import Violation, mapping, sequence

__all__ = ["network_policy_violations"]

NODE_TYPE_LABEL = "ray.io/node-type"
RAY_NODE_LABEL = "ray.io/is-ray-node"  # set to "yes" by KubeRay on every Ray pod (common/pod.go labelPod)
CLUSTER_LABEL = "ray.io/cluster"
_PORTS_TEXT = ", ".join(f"{port} ({name})" for name, port in HEAD_PORTS.items())


def _labels(selector: Any) -> dict[str, Any]:
    return mapping(mapping(selector).get("matchLabels"))


def _is_ray_pod_peer(peer: Any) -> bool:
    """A peer of Ray pods of eventray clusters in the policy's own namespace."""
    labels = _labels(mapping(peer).get("podSelector"))
    ray_pods = labels.get(RAY_NODE_LABEL) == "yes" and labels.get(PART_OF_LABEL) == "eventray"
    return "namespaceSelector" not in mapping(peer) and (ray_pods or bool(labels.get(CLUSTER_LABEL)))


def _is_client_peer(peer: Any) -> bool:
    labels = _labels(mapping(peer).get("podSelector"))
    return "namespaceSelector" not in mapping(peer) and labels.get(RAY_CLIENT_LABEL) == "true"


def _port_number(port: Any) -> int | None:
    """The head port a NetworkPolicy port names, by number or by container port name; None if unknown."""
    value = mapping(port).get("port")
    if mapping(port).get("protocol", "TCP") != "TCP":
        return None  # every head port is TCP
    number = HEAD_PORTS.get(value) if isinstance(value, str) else value
    return number if number in HEAD_PORTS.values() else None


def _allows(rule: dict[str, Any], number: int) -> bool:
    """Whether ``rule`` opens head port ``number``; a rule without ``ports`` opens every port."""
    ports = sequence(rule.get("ports"))
    return not ports or any(_port_number(port) == number for port in ports)


def _selector_violations(spec: dict[str, Any]) -> list[Violation]:
    found = []
    labels = _labels(spec.get("podSelector"))
    if labels.get(NODE_TYPE_LABEL) != "head" or not (
        labels.get(PART_OF_LABEL) == "eventray" or labels.get(CLUSTER_LABEL)
    ):
        found.append(
            Violation(
                "spec.podSelector",
                f"must select the Ray head pods: matchLabels {{{NODE_TYPE_LABEL}: head, {PART_OF_LABEL}: eventray}}",
            )
        )
    if "Ingress" not in sequence(spec.get("policyTypes")):
        found.append(Violation("spec.policyTypes", "must list Ingress, so that traffic not allowed here is dropped"))
    return found


def _rule_violations(rule: dict[str, Any], path: str) -> list[Violation]:
    peers = sequence(rule.get("from"))
    if not peers:
        return [Violation(f"{path}.from", "is empty, which allows every source; name the pods or namespaces")]
    found = []
    for index, port in enumerate(sequence(rule.get("ports"))):
        if _port_number(port) is None:
            text = f"{mapping(port).get('protocol', 'TCP')} {mapping(port).get('port')!r}"
            message = f"{text} is not a port the Ray head listens on; its ports are TCP {_PORTS_TEXT}"
            found.append(Violation(f"{path}.ports[{index}].port", message))
    if _allows(rule, HEAD_PORTS["gcs"]) and not all(map(_is_ray_pod_peer, peers)):
        found.append(
            Violation(
                f"{path}.from",
                f"opens GCS ({HEAD_PORTS['gcs']}) or every port: allow it only from Ray pods, podSelector "
                f'{{{RAY_NODE_LABEL}: "yes", {PART_OF_LABEL}: eventray}} without namespaceSelector',
            )
        )
    return found


def _coverage_violations(rules: list[dict[str, Any]]) -> list[Violation]:
    """Each head port must be reachable by those that use it."""
    found = []
    if not any(
        _allows(rule, HEAD_PORTS["gcs"]) and all(map(_is_ray_pod_peer, sequence(rule.get("from")))) for rule in rules
    ):
        found.append(
            Violation("spec.ingress", f"no rule lets Ray pods reach GCS ({HEAD_PORTS['gcs']}): workers could not join")
        )
    for name in ("dashboard", "client"):
        number = HEAD_PORTS[name]
        if not any(_allows(rule, number) and any(map(_is_client_peer, sequence(rule.get("from")))) for rule in rules):
            found.append(
                Violation(
                    "spec.ingress",
                    f'no rule lets pods labelled {RAY_CLIENT_LABEL}: "true" reach {number} ({name}): the RayJob '
                    "submitter and CI could not reach it",
                )
            )
    metrics = HEAD_PORTS["metrics"]
    if not any(metrics in map(_port_number, sequence(rule.get("ports"))) for rule in rules):
        found.append(
            Violation("spec.ingress", f"no rule opens the metrics port {metrics}: Prometheus could not scrape the head")
        )
    return found


def network_policy_violations(document: dict[str, Any]) -> list[Violation]:
    """Every rule (module docstring) broken by a NetworkPolicy document."""
    spec = mapping(document.get("spec"))
    rules = [mapping(rule) for rule in sequence(spec.get("ingress"))]
    found = _selector_violations(spec)
    for index, rule in enumerate(rules):
        found += _rule_violations(rule, f"spec.ingress[{index}]")
    return found + _coverage_violations(rules)
