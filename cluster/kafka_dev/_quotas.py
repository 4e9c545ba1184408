"""Client quotas on a dev broker, with Kafka's own ``kafka-configs`` (``kafka.admin.ConfigCommand``): a producer
quota makes a sink slow the way a busy shared cluster does (the broker delays its answers to a client over its
byte rate), for the fault benchmarks. aiokafka has no AlterClientQuotas request."""

from __future__ import annotations

from cluster.dev_services import last_lines

from ._config import DevBrokerConfig
from ._errors import DevBrokerError
from ._jars import resolve_kafka_jars
from ._tools import require_tool, run_tool

__all__ = ["set_producer_quota"]

_TIMEOUT_S = 60.0
_RATE = "producer_byte_rate"


def set_producer_quota(cfg: DevBrokerConfig, byte_rate: int | None, client_id: str | None = None) -> None:
    """Limit producers to ``byte_rate`` bytes/s (None: remove the limit): the client id ``client_id``, or every
    client id without a quota of its own when None. The broker must listen in plaintext on ``cfg.port``."""
    if cfg.secure:
        raise DevBrokerError(
            "producer quotas are set over the plaintext listener.\nOperator action: use a plain broker"
        )
    entity = ["--entity-name", client_id] if client_id is not None else ["--entity-default"]
    change = (
        ["--add-config", f"producer_byte_rate={byte_rate}"] if byte_rate else ["--delete-config", "producer_byte_rate"]
    )
    command = [
        str(require_tool("java")), "-cp", str(resolve_kafka_jars(cfg) / "*"), "kafka.admin.ConfigCommand",
        "--bootstrap-server", f"127.0.0.1:{cfg.port}", "--alter", "--entity-type", "clients", *entity, *change,
    ]  # fmt: skip
    done = run_tool(command, _TIMEOUT_S, f"Setting a producer quota on the broker at 127.0.0.1:{cfg.port}")
    if done.returncode != 0:
        raise DevBrokerError(
            f"kafka-configs failed (exit {done.returncode}) setting producer_byte_rate={byte_rate}:\n"
            f"{last_lines(done.stderr or done.stdout)}\nOperator action: check the broker is up on port {cfg.port}"
        )
