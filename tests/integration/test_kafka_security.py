"""Against a secured broker (``eventray kafka up --secure``: SASL_SSL with SCRAM-SHA-512, mutual TLS, ACLs
enforced, no plaintext listener): each refusal is told apart and named, each missing ACL is named with what
the pipeline needs, the wire carries no plaintext, and the orders pipeline runs exactly once as a
least-privilege principal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.conn import create_conn
from aiokafka.errors import TopicAuthorizationFailedError
from aiokafka.protocol.metadata import MetadataRequest
from pydantic import SecretStr

from actors.kafka.access import check_kafka_access, explain_denied, principal
from actors.kafka.admin import committed_offsets, create_acls, ensure_topic, partition_count
from cluster.cli import main as cli_main
from cluster.commands.produce import produce_events
from cluster.control.runner import run_pipeline
from cluster.kafka_dev import (
    CLIENT_PRINCIPAL,
    PIPELINE_USER,
    BrokerSecurity,
    DevBrokerConfig,
    broker_reachable,
    broker_security,
    start_broker,
    stop_broker,
)
from cluster.kafka_dev._tls import make_tls_files
from pipelines.config.kafka import KafkaConnectionConfig, client_options
from pipelines.config.pipeline import GeneratorSourceConfig, PipelineConfig
from pipelines.errors import KafkaAccessDenied
from pipelines.io.kafka_acls import AclBinding, Operation, ResourceType, required_acls
from tests.chaos.test_recovery import assert_exactly_once, kafka_exactly_once_orders, verified
from tests.integration.pipelines_under_test import PARTITIONS, START_TIME_MS, unique
from tests.integration.ray_cluster import LocalRayCluster
from tests.integration.recording_proxy import recording_proxy

pytestmark = [pytest.mark.kafka]

PASSWORD_ENV = "EVENTRAY_TEST_KAFKA_PASSWORD"
EVENTS = 6_000


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerSecurity]:
    broker = start_broker(DevBrokerConfig(state_dir=tmp_path_factory.mktemp("secured-broker"), port=0, secure=True))
    assert broker.security is not None
    try:
        yield broker.security
    finally:
        stop_broker(broker.state_dir)


def _with(connection: KafkaConnectionConfig, **changes: Any) -> KafkaConnectionConfig:
    return connection.model_copy(update=changes)


def _sasl(connection: KafkaConnectionConfig, **changes: Any) -> KafkaConnectionConfig:
    assert connection.sasl is not None
    return _with(connection, sasl=connection.sasl.model_copy(update=changes))


def _tls(connection: KafkaConnectionConfig, **changes: Any) -> KafkaConnectionConfig:
    assert connection.tls is not None
    return _with(connection, tls=connection.tls.model_copy(update=changes))


def _refusal(connection: KafkaConnectionConfig) -> str:
    with pytest.raises(KafkaAccessDenied) as refused:
        asyncio.run(check_kafka_access(connection))
    return str(refused.value)


def test_the_pipeline_user_and_the_client_certificate_are_let_in(secured: BrokerSecurity) -> None:
    for connection in (secured.sasl_connection(PIPELINE_USER), secured.mtls_connection(CLIENT_PRINCIPAL)):
        asyncio.run(check_kafka_access(connection))
        assert broker_reachable(connection.bootstrap_servers or "", options=client_options(connection))


def test_plaintext_clients_are_refused_at_both_listeners_and_told_they_speak_tls(secured: BrokerSecurity) -> None:
    for address in (secured.bootstrap, secured.mtls_bootstrap):
        message = _refusal(KafkaConnectionConfig(bootstrap_servers=address))
        assert f"Kafka at {address} speaks TLS" in message and "security_protocol" in message


def test_a_broker_certificate_from_an_unknown_ca_is_refused(secured: BrokerSecurity) -> None:
    message = _refusal(_with(secured.sasl_connection(PIPELINE_USER), tls=None))
    assert "not signed by a CA" in message and "kafka.tls.ca_file" in message


def test_a_broker_certificate_for_another_name_is_refused(secured: BrokerSecurity) -> None:
    by_name = secured.bootstrap.replace("127.0.0.1", "localhost")  # the certificate names 127.0.0.1 only
    message = _refusal(_with(secured.sasl_connection(PIPELINE_USER), bootstrap_servers=by_name))
    assert "not valid for 'localhost'" in message


def test_mutual_tls_without_a_client_certificate_is_refused(secured: BrokerSecurity) -> None:
    message = _refusal(_tls(secured.mtls_connection(CLIENT_PRINCIPAL), cert_file=None, key_file=None))
    assert "requires a client certificate" in message and "kafka.tls.cert_file" in message


def test_a_client_certificate_from_a_foreign_ca_is_refused(secured: BrokerSecurity, tmp_path: Path) -> None:
    foreign = make_tls_files(tmp_path / "foreign")
    connection = _tls(secured.mtls_connection(CLIENT_PRINCIPAL), cert_file=str(foreign.cert(CLIENT_PRINCIPAL)),
                      key_file=str(foreign.key(CLIENT_PRINCIPAL)))  # fmt: skip
    assert "refused this client's certificate" in _refusal(connection)


@pytest.mark.parametrize("user", [PIPELINE_USER, "mallory"])
def test_a_wrong_password_or_unknown_user_is_named_as_failed_authentication(secured: BrokerSecurity, user: str) -> None:
    connection = _sasl(secured.sasl_connection(PIPELINE_USER), username=user, password=SecretStr("not-it"))
    assert f"authentication failed for user {user!r} (SCRAM-SHA-512)" in _refusal(connection)


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_an_unsupported_mechanism_is_refused_naming_the_accepted_ones(secured: BrokerSecurity, mechanism: str) -> None:
    message = _refusal(_sasl(secured.sasl_connection(PIPELINE_USER), mechanism=mechanism))
    assert f"does not accept SASL mechanism {mechanism}; it accepts SCRAM-SHA-512" in message


def test_tls_without_sasl_at_the_sasl_listener_is_told_to_use_sasl(secured: BrokerSecurity) -> None:
    message = _refusal(_with(secured.mtls_connection(CLIENT_PRINCIPAL), bootstrap_servers=secured.bootstrap))
    assert "expects SASL (SCRAM-SHA-512) over TLS" in message


def test_nothing_readable_crosses_the_tls_listeners_but_it_does_a_plaintext_one(
    secured: BrokerSecurity, kafka_bootstrap: str
) -> None:
    """An eavesdropper's view: a canary topic name asked for over each listener, recorded by a loopback proxy."""
    canary = unique("canary-topic").encode()

    async def ask_through_proxy(connection: KafkaConnectionConfig) -> int:
        async with recording_proxy(connection.bootstrap_servers or "") as recording:
            host, _, port = recording.address.rpartition(":")
            options = client_options(connection)
            options.pop("bootstrap_servers")
            if "ssl_context" in options:
                options["ssl_context"].check_hostname = False  # the proxy's port is not the broker's
            conn = await create_conn(host, int(port), **options)
            try:
                await conn.send(MetadataRequest([canary.decode()]))
            finally:
                conn.close()
            return recording.count(canary)

    assert asyncio.run(ask_through_proxy(secured.sasl_connection(PIPELINE_USER))) == 0
    assert asyncio.run(ask_through_proxy(secured.mtls_connection(CLIENT_PRINCIPAL))) == 0
    assert asyncio.run(ask_through_proxy(KafkaConnectionConfig(bootstrap_servers=kafka_bootstrap))) > 0


# -- least privilege: each ACL this pipeline needs, left out once, is named when Kafka refuses --------------------


def _pipeline(
    tmp_path: Path, secured: BrokerSecurity, name: str, kafka_create_topics: bool = True, **extra: Any
) -> PipelineConfig:
    """The exactly-once orders pipeline on the secured broker, as the pipeline user, password from the env of this
    driver (set after the session's cluster started: ``runtime.secrets: driver`` hands it to the actors)."""
    kafka = {
        "create_topics": kafka_create_topics,
        "security_protocol": "SASL_SSL",
        "tls": {"ca_file": str(secured.tls.ca_cert)},
        "sasl": {"mechanism": "SCRAM-SHA-512", "username": PIPELINE_USER, "password_env": PASSWORD_ENV},
    }
    config = kafka_exactly_once_orders(tmp_path, EVENTS, name, secured.bootstrap, kafka=kafka, **extra)
    return config.model_copy(update={"runtime": config.runtime.model_copy(update={"secrets": "driver"})})


def _grant_all_but(secured: BrokerSecurity, config: PipelineConfig, left_out: AclBinding | None) -> None:
    granted = [binding for binding in required_acls(config) if binding != left_out]
    asyncio.run(create_acls(secured.sasl_connection("admin"), f"User:{PIPELINE_USER}", granted))


def _binding(config: PipelineConfig, kind: ResourceType, operation: Operation, name: str | None = None) -> AclBinding:
    return next(
        b
        for b in required_acls(config)
        if b.resource_type is kind and b.operation is operation and name in (None, b.resource_name)
    )


def _denied(error: BaseException, config: PipelineConfig) -> str:
    explained = explain_denied(error, config)
    assert explained is not None, f"not recognised as an authorization error: {error!r}"
    return str(explained)


def test_the_acls_of_the_orders_pipeline_are_exactly_what_it_uses(secured: BrokerSecurity, tmp_path: Path) -> None:
    name = unique("acl-list")
    config = _pipeline(tmp_path, secured, name)
    assert {(b.resource_type.name, b.resource_name, b.operation.name) for b in required_acls(config)} == {
        ("TOPIC", f"{name}.in", "READ"), ("TOPIC", f"{name}.in", "DESCRIBE"), ("GROUP", name, "READ"),
        *{("TOPIC", topic, op) for topic in (f"{name}.out", f"{name}.dlq", f"{name}.eventray-commits")
          for op in ("WRITE", "DESCRIBE", "CREATE")},
        ("TOPIC", f"{name}.eventray-commits", "READ"),
        ("TRANSACTIONAL_ID", f"eventray-{name}-", "WRITE"), ("TRANSACTIONAL_ID", f"eventray-{name}-", "DESCRIBE"),
    }  # fmt: skip


def test_reading_the_input_without_read_is_named(secured: BrokerSecurity, tmp_path: Path) -> None:
    config = _pipeline(tmp_path, secured, unique("no-read"))
    source = config.source.topic  # type: ignore[union-attr]
    asyncio.run(ensure_topic(secured.sasl_connection("admin"), source, 1))
    _grant_all_but(secured, config, _binding(config, ResourceType.TOPIC, Operation.READ, source))

    async def fetch() -> None:
        consumer = AIOKafkaConsumer(enable_auto_commit=False, **client_options(secured.sasl_connection(PIPELINE_USER)))
        await consumer.start()
        try:
            consumer.assign([TopicPartition(source, 0)])
            await consumer.seek_to_beginning()
            for _ in range(50):
                await consumer.getmany(timeout_ms=200)
        finally:
            await consumer.stop()

    with pytest.raises(Exception) as refused:
        asyncio.run(fetch())
    assert f"access to topic {source!r}. This pipeline needs on it: Describe, Read." in _denied(refused.value, config)


def test_describing_a_topic_without_any_acl_is_named_not_taken_for_a_missing_topic(
    secured: BrokerSecurity, tmp_path: Path
) -> None:
    config = _pipeline(tmp_path, secured, unique("no-describe"))
    source = config.source.topic  # type: ignore[union-attr]
    asyncio.run(ensure_topic(secured.sasl_connection("admin"), source, 1))
    with pytest.raises(Exception) as refused:
        asyncio.run(partition_count(secured.sasl_connection(PIPELINE_USER), source))
    assert f"Kafka denied User:{PIPELINE_USER} access to topic {source!r}" in _denied(refused.value, config)


def test_committing_without_the_group_acl_is_named(secured: BrokerSecurity, tmp_path: Path) -> None:
    config = _pipeline(tmp_path, secured, unique("no-group"))
    source = config.source.topic  # type: ignore[union-attr]
    asyncio.run(ensure_topic(secured.sasl_connection("admin"), source, 1))
    _grant_all_but(secured, config, _binding(config, ResourceType.GROUP, Operation.READ))
    with pytest.raises(Exception) as refused:
        asyncio.run(committed_offsets(secured.sasl_connection(PIPELINE_USER), source, config.group_id))
    message = _denied(refused.value, config)
    assert f"access to consumer group {config.group_id!r}. This pipeline needs on it: Read." in message


def test_a_transaction_without_the_transactional_id_acl_is_named(secured: BrokerSecurity, tmp_path: Path) -> None:
    config = _pipeline(tmp_path, secured, unique("no-txn"))
    _grant_all_but(secured, config, _binding(config, ResourceType.TRANSACTIONAL_ID, Operation.WRITE))
    transactional_id = f"eventray-{config.name}-aggregate-0/sink-0"

    async def begin() -> None:
        producer = AIOKafkaProducer(transactional_id=transactional_id,
                                    **client_options(secured.sasl_connection(PIPELINE_USER)))  # fmt: skip
        try:
            await producer.start()
        finally:
            await producer.stop()

    with pytest.raises(Exception) as refused:
        asyncio.run(begin())
    assert f"access to transactional id {transactional_id!r}. This pipeline needs on it:" in _denied(
        refused.value, config
    )


def test_writing_a_topic_the_pipeline_was_not_granted_is_named(secured: BrokerSecurity, tmp_path: Path) -> None:
    config = _pipeline(tmp_path, secured, unique("foreign"))
    _grant_all_but(secured, config, None)
    foreign = unique("someone-elses-topic")
    asyncio.run(ensure_topic(secured.sasl_connection("admin"), foreign, 1))

    async def write() -> None:
        producer = AIOKafkaProducer(**client_options(secured.sasl_connection(PIPELINE_USER)))
        await producer.start()
        try:
            await producer.send_and_wait(foreign, b"not yours")
        finally:
            await producer.stop()

    with pytest.raises(Exception) as refused:
        asyncio.run(write())
    message = _denied(refused.value, config)
    assert f"access to topic {foreign!r}." in message and "This pipeline needs on it" not in message


# -- the pipeline on Ray ------------------------------------------------------------------------------------------


def _produce_input(secured: BrokerSecurity, config: PipelineConfig) -> None:
    generator = GeneratorSourceConfig(partitions=PARTITIONS, seed=7, rate_per_s=None, event_time_rate_per_s=1_000,
                                      invalid_fraction=0.01)  # fmt: skip
    admin = secured.sasl_connection("admin")
    asyncio.run(produce_events(admin, config.source.topic, EVENTS, generator, 10_000, START_TIME_MS))  # type: ignore[union-attr]


@pytest.mark.ray
def test_the_orders_pipeline_runs_exactly_once_over_sasl_ssl_with_least_privilege(
    ray_driver: LocalRayCluster,
    secured: BrokerSecurity,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """With ``kafka.create_topics: false`` and the topics made beforehand by an admin: not even Create. The
    password shows nowhere: not in the driver's output, Ray's logs or the dashboard's views."""
    monkeypatch.setenv(PASSWORD_ENV, secured.password(PIPELINE_USER))
    name = unique("secured-orders")
    config = _pipeline(tmp_path, secured, name, kafka_create_topics=False)
    _produce_input(secured, config)
    for topic, partitions in (
        (f"{name}.out", PARTITIONS),
        (f"{name}.dlq", PARTITIONS),
        (f"{name}.eventray-commits", 1),
    ):
        asyncio.run(
            ensure_topic(secured.sasl_connection("admin"), topic, partitions, compacted=topic.endswith("commits"))
        )
    assert not [binding for binding in required_acls(config) if binding.operation is Operation.CREATE]
    _grant_all_but(secured, config, None)

    summary = run_pipeline(config, address=ray_driver.address)

    assert summary.progress.events_in == EVENTS
    driver_output = capfd.readouterr()
    assert secured.password(PIPELINE_USER) not in driver_output.out + driver_output.err
    assert ray_driver.places_holding(secured.password(PIPELINE_USER).encode()) == []
    assert ray_driver.places_holding(name.encode()), "the places searched do show this run (its actors' names)"
    # the checker reads every output, which the pipeline principal may not: it runs as admin
    assert_exactly_once(verified(config.model_copy(update={"kafka": secured.sasl_connection("admin")})), EVENTS)


@pytest.mark.ray
def test_a_pipeline_missing_an_acl_fails_at_once_naming_it(
    ray_driver: LocalRayCluster, secured: BrokerSecurity, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, secured.password(PIPELINE_USER))
    config = _pipeline(tmp_path, secured, unique("missing-read"))
    _produce_input(secured, config)
    topic = config.source.topic  # type: ignore[union-attr]
    _grant_all_but(secured, config, _binding(config, ResourceType.TOPIC, Operation.READ, topic))

    with pytest.raises(KafkaAccessDenied) as refused:
        run_pipeline(config, address=ray_driver.address)

    assert f"Kafka denied User:{PIPELINE_USER} access to topic {topic!r}" in str(refused.value)
    assert principal(config.kafka) == f"User:{PIPELINE_USER}"  # type: ignore[arg-type]


def test_a_wrong_password_fails_before_ray_starts_any_actor(
    secured: BrokerSecurity, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    config = _pipeline(tmp_path, secured, unique("wrong-password"))
    with pytest.raises(KafkaAccessDenied, match=f"authentication failed for user '{PIPELINE_USER}'"):
        run_pipeline(config, address="127.0.0.1:1")  # no Ray there: the refusal must come first


def test_the_command_line_starts_reports_grants_and_stops_a_secured_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "broker")
    assert cli_main(["kafka", "up", "--secure", "--port", "0", "--json", "--state-dir", state]) == 0
    try:
        facts = json.loads(capsys.readouterr().out)["secure"]
        assert cli_main(["kafka", "status", "--state-dir", state]) == 0, "the status probe connects as admin"
        assert "answering" in capsys.readouterr().out
        security = broker_security(Path(state))
        assert security is not None and facts["sasl_ssl_bootstrap"] == security.bootstrap
        asyncio.run(ensure_topic(security.sasl_connection("admin"), "orders", 2))
        pipeline = security.sasl_connection(PIPELINE_USER)
        with pytest.raises(TopicAuthorizationFailedError):
            asyncio.run(partition_count(pipeline, "orders"))

        config = str(Path(__file__).resolve().parents[2] / "configs" / "orders_kafka.yaml")
        assert cli_main(["acls", config, "--principal", f"User:{PIPELINE_USER}", "--apply", "--state-dir", state]) == 0

        assert "--operation Read --topic orders" in capsys.readouterr().out
        assert asyncio.run(partition_count(pipeline, "orders")) == 2
    finally:
        assert cli_main(["kafka", "down", "--state-dir", state]) == 0
