"""Pure rules of Kafka security: the ACLs a config needs, the secured broker's listeners, naming refusals."""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from ray.exceptions import RayTaskError

from actors.kafka.access import check_kafka_access, explain_denied, principal
from cluster.cli import main as cli_main
from cluster.kafka_dev import DevBrokerConfig, run_blocking
from cluster.kafka_dev._broker import _secure
from cluster.kafka_dev._errors import DevBrokerError
from cluster.kafka_dev._properties import BrokerPorts, render_server_properties
from cluster.kafka_dev._state_files import StatePaths
from cluster.kafka_dev._tls import TlsFiles
from cluster.kafka_dev._tools import run_tool
from pipelines.config.kafka import KafkaConnectionConfig
from pipelines.config.pipeline import PipelineConfig, load_config
from pipelines.io.kafka_acls import AclBinding, Operation, PatternType, ResourceType, required_acls

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def orders_kafka(**overrides: Any) -> PipelineConfig:
    return load_config(CONFIGS / "orders_kafka.yaml", overrides)


def acl_set(config: PipelineConfig) -> set[tuple[str, str, str, str]]:
    return {
        (b.resource_type.name, b.resource_name, b.pattern_type.name, b.operation.name) for b in required_acls(config)
    }


def test_an_at_least_once_pipeline_reads_its_topic_and_group_and_writes_and_creates_its_outputs() -> None:
    assert acl_set(orders_kafka()) == {
        ("TOPIC", "orders", "LITERAL", "READ"),
        ("TOPIC", "orders", "LITERAL", "DESCRIBE"),
        ("GROUP", "eventray-orders", "LITERAL", "READ"),
        *{
            ("TOPIC", topic, "LITERAL", operation)
            for topic in ("orders.revenue-per-customer", "orders.dead-letter")
            for operation in ("WRITE", "DESCRIBE", "CREATE")
        },
    }


def test_exactly_once_adds_the_commit_markers_and_the_transactional_id_prefix() -> None:
    added = acl_set(orders_kafka(delivery="exactly_once", checkpoint={})) - acl_set(orders_kafka())
    assert added == {
        *{
            ("TOPIC", "orders-kafka.eventray-commits", "LITERAL", operation)
            for operation in ("READ", "WRITE", "DESCRIBE", "CREATE")
        },
        ("TRANSACTIONAL_ID", "eventray-orders-kafka-", "PREFIXED", "WRITE"),
        ("TRANSACTIONAL_ID", "eventray-orders-kafka-", "PREFIXED", "DESCRIBE"),
    }


def test_pre_created_topics_need_no_create_and_a_pipeline_without_kafka_needs_nothing() -> None:
    assert not [
        b for b in required_acls(orders_kafka(**{"kafka.create_topics": False})) if b.operation is Operation.CREATE
    ]
    assert required_acls(load_config(CONFIGS / "orders.yaml", {})) == []


def test_a_binding_reads_as_kafka_acls_arguments() -> None:
    binding = AclBinding(ResourceType.TRANSACTIONAL_ID, "eventray-p-", PatternType.PREFIXED, Operation.WRITE)
    assert binding.describe("User:pipeline") == (
        "--allow-principal User:pipeline --operation Write --transactional-id eventray-p- "
        "--resource-pattern-type prefixed"
    )


def _properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_a_secured_broker_has_no_plaintext_listener_and_denies_what_no_acl_allows(tmp_path: Path) -> None:
    ports = BrokerPorts(port=19092, controller=19093, mtls=19094)
    props = _properties(render_server_properties(ports, tmp_path / "data", TlsFiles(tmp_path / "tls")))
    assert props["listeners"] == "SASL_SSL://127.0.0.1:19092,SSL://127.0.0.1:19094,CONTROLLER://127.0.0.1:19093"
    assert set(props["listener.security.protocol.map"].split(",")) == {"SASL_SSL:SASL_SSL", "SSL:SSL", "CONTROLLER:SSL"}
    assert "PLAINTEXT" not in props["listeners"] + props["advertised.listeners"]
    assert props["ssl.client.auth"] == "required" and props["listener.name.sasl_ssl.ssl.client.auth"] == "none"
    assert props["allow.everyone.if.no.acl.found"] == "false"
    assert props["authorizer.class.name"].endswith("StandardAuthorizer")
    assert props["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert props["super.users"] == "User:broker;User:admin"


def test_the_three_ports_of_a_secured_broker_must_differ() -> None:
    with pytest.raises(ValueError, match="must differ"):
        DevBrokerConfig(port=19092, mtls_port=19092, secure=True)


def _secured_orders() -> PipelineConfig:
    kafka = {"security_protocol": "SASL_SSL", "sasl": {"mechanism": "SCRAM-SHA-512", "username": "pipeline",
                                                       "password": "x"}}  # fmt: skip
    return orders_kafka(kafka=kafka, delivery="exactly_once", checkpoint={})


def _through_ray(cause: BaseException) -> RayTaskError:
    return RayTaskError("SourceActor.run", "Traceback (most recent call last): ...", cause)


def test_a_missing_acl_is_named_with_the_operations_the_pipeline_needs_even_through_ray() -> None:
    config = _secured_orders()
    denied = explain_denied(_through_ray(TopicAuthorizationFailedError({"orders"})), config)
    assert str(denied).startswith("Kafka denied User:pipeline access to topic 'orders'. This pipeline needs on it: ")
    assert "Describe, Read." in str(denied)
    group = explain_denied(GroupAuthorizationFailedError("eventray-orders"), config)
    assert "consumer group 'eventray-orders'. This pipeline needs on it: Read." in str(group)
    txn = explain_denied(TransactionalIdAuthorizationFailed("eventray-orders-kafka-source-0/sink-0"), config)
    assert (
        "transactional id 'eventray-orders-kafka-source-0/sink-0'. This pipeline needs on it: Describe, Write."
        in str(txn)
    )


def test_other_errors_are_not_taken_for_a_missing_acl() -> None:
    assert explain_denied(KafkaConnectionError("closed"), _secured_orders()) is None
    assert explain_denied(TopicAuthorizationFailedError("orders"), load_config(CONFIGS / "orders.yaml", {})) is None


def test_the_principal_is_the_sasl_user_else_the_certificate_else_anonymous() -> None:
    assert principal(_secured_orders().kafka) == "User:pipeline"  # type: ignore[arg-type]
    mtls = KafkaConnectionConfig.model_validate(
        {"security_protocol": "SSL", "tls": {"cert_file": "c.pem", "key_file": "k.pem"}}
    )
    assert principal(mtls) == "the principal of client certificate c.pem"
    assert principal(KafkaConnectionConfig()) == "User:ANONYMOUS"


async def test_the_access_check_runs_from_code_whose_event_loop_is_running() -> None:
    """As ``run_pipeline`` calls it, also from a notebook; an address nobody listens on is left to the run."""
    run_blocking(check_kafka_access(KafkaConnectionConfig(bootstrap_servers=f"127.0.0.1:{_closed_port()}")))


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_a_listener_that_only_closes_connections_is_left_to_the_run_not_called_a_tls_problem() -> None:
    """A broker that is restarting accepts TCP and closes it: no TLS or SASL cause, so no refusal here."""

    async def close_at_once(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(close_at_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        for protocol in ("PLAINTEXT", "SSL"):
            connection = KafkaConnectionConfig(bootstrap_servers=f"127.0.0.1:{port}", security_protocol=protocol)
            access: Awaitable[object] = check_kafka_access(connection)
            assert await access is None


def test_granting_without_a_principal_the_config_names_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["acls", str(CONFIGS / "orders_kafka.yaml"), "--apply"]) == 2
    assert "the principal cannot be told from the config" in capsys.readouterr().err
    assert cli_main(["acls", str(CONFIGS / "orders_kafka.yaml")]) == 0, "a list shows a placeholder"
    assert "--allow-principal User:<principal> --operation Read --topic orders" in capsys.readouterr().out


def test_keeping_data_formatted_without_the_secured_users_is_refused(tmp_path: Path) -> None:
    """A storage formatted by a plain broker has no SCRAM users: a secured start over it would never get ready."""
    paths = StatePaths(tmp_path / "broker")
    paths.data.mkdir(parents=True)
    (paths.data / "meta.properties").write_text("formatted by a plain broker\n")
    config = DevBrokerConfig(state_dir=paths.root, secure=True, keep_data=True)
    with pytest.raises(DevBrokerError, match="formatted without the secured broker's users"):
        _secure(config, paths, BrokerPorts(port=19092, controller=19093, mtls=19094))


def test_a_tool_that_times_out_is_named_without_its_command_line() -> None:
    """The storage format's command line holds the SCRAM passwords: the error must not carry it."""
    secret = "password=not-for-the-logs"
    with pytest.raises(DevBrokerError) as timed_out:
        run_tool([sys.executable, "-c", "import time; time.sleep(5)", secret], 0.2, "Formatting Kafka storage")
    assert "Formatting Kafka storage took over 0 s" in str(timed_out.value)
    assert timed_out.value.__cause__ is None and timed_out.value.__suppress_context__
    assert secret not in str(timed_out.value)
