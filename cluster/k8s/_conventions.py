"""The contract between eventray's manifests, its container image and the pipelines it runs.

Everything that must agree across ``k8s/``, ``k8s/Dockerfile``, the renderer and the validator is named
here once: the Ray version, where the project lives inside the image, the custom resource that sizes
worker pods, the head's ports, Ray's auth mode and token Secret, and which environment variable comes from
which Secret or ConfigMap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BASE_IMAGE",
    "CHECKPOINT_SECRET",
    "DEFAULT_IMAGE",
    "DEFAULT_RAY_AUTH_MODE",
    "HEAD_PORTS",
    "IMAGE_PROJECT_DIR",
    "KAFKA_SECRET",
    "METRICS_PORT",
    "PART_OF_LABEL",
    "PIPELINE_LABEL",
    "RAY_AUTH_MODES",
    "RAY_AUTH_SECRET",
    "RAY_AUTH_TOKEN_KEY",
    "RAY_CLIENT_LABEL",
    "RAY_VERSION",
    "SECRET_ENV",
    "SLOT_RESOURCE",
    "TELEMETRY_CONFIGMAP",
    "RayAuthMode",
    "SecretEnv",
]

RAY_VERSION = "2.60.0"
BASE_IMAGE = f"rayproject/ray:{RAY_VERSION}-py311"
DEFAULT_IMAGE = "eventray:0.1.0"
# The Dockerfile copies the project here; configs are read from IMAGE_PROJECT_DIR/configs.
IMAGE_PROJECT_DIR = "/home/ray/eventray"

# Each worker pod advertises this many units per pod; every SourceActor and AggregateActor asks for one,
# so an actor that cannot be placed is the resource demand the Ray autoscaler answers with a new pod.
SLOT_RESOURCE = "eventray_slot"
METRICS_PORT = 8080
# The head's container ports by name; k8s/base/networkpolicy-ray-head.yaml must open exactly these.
HEAD_PORTS: dict[str, int] = {"gcs": 6379, "dashboard": 8265, "client": 10001, "metrics": METRICS_PORT}

# Ray token auth: "token" unless the user renders with --ray-auth disabled. Every container sets the same
# RAY_AUTH_MODE; the token comes only from this Secret (authOptions.secretName), under KubeRay's fixed key.
RayAuthMode = Literal["token", "disabled"]
RAY_AUTH_MODES: tuple[RayAuthMode, ...] = ("token", "disabled")
DEFAULT_RAY_AUTH_MODE: RayAuthMode = "token"
RAY_AUTH_SECRET = "eventray-ray-auth"  # noqa: S105
RAY_AUTH_TOKEN_KEY = "auth_token"  # noqa: S105
# Pods with this label set to "true" may reach the head's jobs API (8265) and Ray client port (10001).
RAY_CLIENT_LABEL = "eventray.io/ray-client"

# Names of Kubernetes Secret objects (created by the operator, see k8s/README.md), not secret values.
KAFKA_SECRET = "eventray-kafka"  # noqa: S105
CHECKPOINT_SECRET = "eventray-checkpoints"  # noqa: S105
PII_SECRET = "eventray-pii"  # noqa: S105
# Every key of this ConfigMap (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL, ...) becomes an
# environment variable of the Ray containers; it is optional, so a cluster without it runs untraced.
TELEMETRY_CONFIGMAP = "eventray-telemetry"

PART_OF_LABEL = "app.kubernetes.io/part-of"
PIPELINE_LABEL = "eventray.io/pipeline"


@dataclass(frozen=True)
class SecretEnv:
    """One environment variable read from the key of the same name in a Kubernetes Secret.

    ``optional`` keys let a pod start without them (a broker without SASL, S3 through workload identity
    instead of keys); a pipeline that needs the value then fails with a ConfigError naming it.
    """

    name: str
    secret: str
    optional: bool


SECRET_ENV: tuple[SecretEnv, ...] = (
    SecretEnv("KAFKA_BOOTSTRAP", KAFKA_SECRET, optional=True),
    SecretEnv("KAFKA_SASL_USERNAME", KAFKA_SECRET, optional=True),
    SecretEnv("KAFKA_SASL_PASSWORD", KAFKA_SECRET, optional=True),
    SecretEnv("EVENTRAY_CHECKPOINT_URI", CHECKPOINT_SECRET, optional=False),
    SecretEnv("AWS_ACCESS_KEY_ID", CHECKPOINT_SECRET, optional=True),
    SecretEnv("AWS_SECRET_ACCESS_KEY", CHECKPOINT_SECRET, optional=True),
    SecretEnv("AWS_ENDPOINT_URL", CHECKPOINT_SECRET, optional=True),
    SecretEnv("EVENTRAY_MASK_KEY", PII_SECRET, optional=True),
    SecretEnv("EVENTRAY_CHECKPOINT_KEY", CHECKPOINT_SECRET, optional=True),
    SecretEnv("EVENTRAY_DEAD_LETTER_KEY", PII_SECRET, optional=True),
)
