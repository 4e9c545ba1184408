"""Small hand-written schemas for the non-Ray kinds eventray ships, covering only the fields it writes.

ConfigMap (core/v1), the Prometheus Operator's PodMonitor and NetworkPolicy (networking.k8s.io/v1, ingress
only: pod and namespace selectors by label, TCP/UDP/SCTP ports). :func:`._schema.make_strict` turns them
strict, so a field eventray does not use (``egress``, ``ipBlock``, ``matchExpressions``) is reported as
unknown rather than passed unchecked.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BUILTIN_SCHEMAS", "OBJECT_META"]

_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_LABEL_SELECTOR = {"type": "object", "properties": {"matchLabels": _STRING_MAP}}
OBJECT_META: dict[str, Any] = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "labels": _STRING_MAP,
        "annotations": _STRING_MAP,
    },
}
_RELABELING = {
    "type": "object",
    "properties": {
        "sourceLabels": {"type": "array", "items": {"type": "string"}},
        "separator": {"type": "string"},
        "targetLabel": {"type": "string"},
        "regex": {"type": "string"},
        "replacement": {"type": "string"},
        "action": {"type": "string"},
    },
}
_ENDPOINT = {
    "type": "object",
    "required": ["port"],
    "properties": {
        "port": {"type": "string"},
        "path": {"type": "string"},
        "interval": {"type": "string"},
        "scrapeTimeout": {"type": "string"},
        "scheme": {"enum": ["http", "https"]},
        "relabelings": {"type": "array", "items": _RELABELING},
        "metricRelabelings": {"type": "array", "items": _RELABELING},
    },
}
_PEER = {
    "type": "object",
    "minProperties": 1,
    "properties": {"podSelector": _LABEL_SELECTOR, "namespaceSelector": _LABEL_SELECTOR},
}
_POLICY_PORT = {
    "type": "object",
    "required": ["port"],
    "properties": {
        "protocol": {"enum": ["TCP", "UDP", "SCTP"]},
        "port": {"type": ["integer", "string"], "minimum": 1, "maximum": 65535},
    },
}

BUILTIN_SCHEMAS: dict[str, dict[str, Any]] = {
    "ConfigMap": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata"],
        "properties": {
            "apiVersion": {"const": "v1"},
            "kind": {"const": "ConfigMap"},
            "metadata": OBJECT_META,
            "data": _STRING_MAP,
            "immutable": {"type": "boolean"},
        },
    },
    "PodMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PodMonitor"},
            "metadata": OBJECT_META,
            "spec": {
                "type": "object",
                "required": ["selector", "podMetricsEndpoints"],
                "properties": {
                    "jobLabel": {"type": "string"},
                    "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                    "selector": _LABEL_SELECTOR,
                    "namespaceSelector": {
                        "type": "object",
                        "properties": {"any": {"type": "boolean"}, "matchNames": {"type": "array"}},
                    },
                    "podMetricsEndpoints": {"type": "array", "minItems": 1, "items": _ENDPOINT},
                },
            },
        },
    },
    "NetworkPolicy": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "networking.k8s.io/v1"},
            "kind": {"const": "NetworkPolicy"},
            "metadata": OBJECT_META,
            "spec": {
                "type": "object",
                "required": ["podSelector"],
                "properties": {
                    "podSelector": _LABEL_SELECTOR,
                    "policyTypes": {"type": "array", "items": {"enum": ["Ingress", "Egress"]}},
                    "ingress": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "from": {"type": "array", "items": _PEER},
                                "ports": {"type": "array", "items": _POLICY_PORT},
                            },
                        },
                    },
                },
            },
        },
    },
}
