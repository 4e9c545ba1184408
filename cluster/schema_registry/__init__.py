"""A local Apicurio Registry for development and tests, without Docker, spoken to as a Confluent Schema Registry.

The registry (Apicurio 2.4.2, in-memory storage) is built once from Maven Central with ``mvn`` into a
shared cache as a Quarkus app, and runs as a detached JVM on a loopback port. Clients use its
Confluent-compatible API, whose base URL (``http://127.0.0.1:<port>/apis/ccompat/v7``) is the value of
``SCHEMA_REGISTRY_URL``. ``eventray registry up|down|status`` and the pytest fixture go through this API;
each registry is identified by its state dir. JSON Schema compatibility checks do not work in this
build (a library they need is not on Maven Central); Avro and Protobuf do.

Errors: every failure is a ``DevRegistryError`` whose message ends with an "Operator action:" line.
"""

from ._build import build_registry_app
from ._config import DEFAULT_PORT, DevRegistryConfig, registry_url_from_env
from ._errors import DevRegistryError
from ._probe import registry_answers
from ._registry import RegistryStatus, RunningRegistry, registry_status, start_registry, stop_registry

__all__ = [
    "DEFAULT_PORT",
    "DevRegistryConfig",
    "DevRegistryError",
    "RegistryStatus",
    "RunningRegistry",
    "build_registry_app",
    "registry_answers",
    "registry_status",
    "registry_url_from_env",
    "start_registry",
    "stop_registry",
]
