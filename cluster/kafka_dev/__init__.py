"""A local single-node Apache Kafka broker (KRaft) for development and tests, without Docker.

The server jars are resolved from Maven Central with ``mvn`` into a shared cache, and ``kafka.Kafka``
runs as a detached JVM on loopback ports. ``eventray kafka up|down|status``, ``make test`` and the
pytest fixtures all go through this API; each broker is identified by its state dir.

Errors: every failure is a ``DevBrokerError`` whose message ends with an "Operator action:" line.
"""

from ._broker import BrokerStatus, RunningBroker, broker_security, broker_status, start_broker, stop_broker
from ._config import DevBrokerConfig, bootstrap_from_env
from ._errors import DevBrokerError
from ._jars import resolve_kafka_jars
from ._probe import broker_reachable, run_blocking
from ._quotas import set_producer_quota
from ._security import PIPELINE_USER, BrokerSecurity
from ._tls import CLIENT_PRINCIPAL

__all__ = [
    "CLIENT_PRINCIPAL",
    "PIPELINE_USER",
    "BrokerSecurity",
    "BrokerStatus",
    "DevBrokerConfig",
    "DevBrokerError",
    "RunningBroker",
    "bootstrap_from_env",
    "broker_reachable",
    "broker_security",
    "broker_status",
    "resolve_kafka_jars",
    "run_blocking",
    "set_producer_quota",
    "start_broker",
    "stop_broker",
]
