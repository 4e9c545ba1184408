"""Kafka configs: TLS/SASL consistency, secrets resolved from the environment once, aiokafka keyword arguments,
and secrets that never show up in a printed or serialised config."""

from __future__ import annotations

import datetime
import importlib.util
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import SecretStr, ValidationError

from pipelines.config.kafka import (
    DEFAULT_BOOTSTRAP,
    KafkaConnectionConfig,
    KafkaSourceConfig,
    SaslConfig,
    TlsConfig,
    client_options,
    resolve_kafka_secrets,
)
from pipelines.config.pipeline import PipelineConfig, parse_config
from pipelines.errors import ConfigError

# Test values, searched for in printed and serialised configs.
SECRET = "s3cr3t-Pa55word"
KEY_PASSWORD = "k3y-pa55"
CA_COMMON_NAME = "eventray-test-ca"


def scram(**overrides: Any) -> SaslConfig:
    fields: dict[str, Any] = {"mechanism": "SCRAM-SHA-512", "username": "svc-eventray", "password": SECRET}
    return SaslConfig(**(fields | overrides))


# --- TlsConfig and SaslConfig ---------------------------------------------------------------------------------


def test_tls_accepts_cert_and_key_together_or_neither() -> None:
    assert TlsConfig().cert_file is None
    both = TlsConfig(cert_file="client.pem", key_file="client.key")
    assert (both.cert_file, both.key_file) == ("client.pem", "client.key")


@pytest.mark.parametrize("fields", [{"cert_file": "client.pem"}, {"key_file": "client.key"}], ids=["cert", "key"])
def test_tls_refuses_cert_without_key_and_key_without_cert(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="cert_file and key_file go together"):
        TlsConfig(**fields)


def test_sasl_takes_a_password_or_a_password_env() -> None:
    assert scram().password is not None
    from_env = scram(password=None, password_env="KAFKA_PASSWORD")
    assert (from_env.password, from_env.password_env) == (None, "KAFKA_PASSWORD")


@pytest.mark.parametrize("overrides", [{"password": None}, {"password_env": "KAFKA_PASSWORD"}], ids=["neither", "both"])
def test_sasl_refuses_neither_or_both_password_sources(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError, match="exactly one of password and password_env"):
        scram(**overrides)


def test_sasl_refuses_an_unknown_mechanism_and_an_empty_username() -> None:
    with pytest.raises(ValidationError, match="mechanism"):
        scram(mechanism="GSSAPI")
    with pytest.raises(ValidationError, match="username"):
        scram(username="")


# --- KafkaConnectionConfig ------------------------------------------------------------------------------------


def test_connection_defaults_to_plaintext_without_bootstrap() -> None:
    connection = KafkaConnectionConfig()
    assert connection.security_protocol == "PLAINTEXT"
    assert (connection.bootstrap_servers, connection.tls, connection.sasl) == (None, None, None)


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
def test_sasl_protocols_need_a_sasl_section(protocol: Literal["SASL_SSL", "SASL_PLAINTEXT"]) -> None:
    with pytest.raises(ValidationError, match=f"security_protocol {protocol} needs a sasl section"):
        KafkaConnectionConfig(security_protocol=protocol)


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
def test_a_sasl_section_needs_a_sasl_protocol(protocol: Literal["PLAINTEXT", "SSL"]) -> None:
    with pytest.raises(ValidationError, match="a sasl section needs security_protocol SASL_SSL"):
        KafkaConnectionConfig(security_protocol=protocol, sasl=scram())


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SASL_PLAINTEXT"])
def test_a_tls_section_needs_a_tls_protocol(protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT"]) -> None:
    sasl = scram() if protocol.startswith("SASL") else None
    with pytest.raises(ValidationError, match="a tls section needs security_protocol SSL or SASL_SSL"):
        KafkaConnectionConfig(security_protocol=protocol, sasl=sasl, tls=TlsConfig())


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_a_tls_section_is_accepted_with_a_tls_protocol(protocol: Literal["SSL", "SASL_SSL"]) -> None:
    sasl = scram() if protocol.startswith("SASL") else None
    connection = KafkaConnectionConfig(security_protocol=protocol, sasl=sasl, tls=TlsConfig(check_hostname=False))
    assert connection.tls == TlsConfig(check_hostname=False)


def test_sasl_plain_in_clear_text_is_refused_with_the_fix() -> None:
    with pytest.raises(ValidationError) as caught:
        KafkaConnectionConfig(security_protocol="SASL_PLAINTEXT", sasl=scram(mechanism="PLAIN"))
    message = str(caught.value)
    assert "SASL PLAIN without TLS sends the password in clear text" in message
    assert "use security_protocol SASL_SSL" in message
    assert "allow_plaintext_sasl: true" in message


def test_sasl_plain_in_clear_text_is_allowed_when_asked_for() -> None:
    connection = KafkaConnectionConfig(
        security_protocol="SASL_PLAINTEXT", sasl=scram(mechanism="PLAIN"), allow_plaintext_sasl=True
    )
    assert connection.sasl is not None
    assert connection.sasl.mechanism == "PLAIN"


def test_sasl_plain_over_tls_needs_no_permission() -> None:
    connection = KafkaConnectionConfig(security_protocol="SASL_SSL", sasl=scram(mechanism="PLAIN"))
    assert connection.allow_plaintext_sasl is False


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_over_sasl_plaintext_is_allowed(mechanism: str) -> None:
    # SCRAM never sends the password itself, so it needs no TLS to keep it secret.
    connection = KafkaConnectionConfig(security_protocol="SASL_PLAINTEXT", sasl=scram(mechanism=mechanism))
    assert connection.security_protocol == "SASL_PLAINTEXT"


def test_connection_refuses_a_short_request_timeout_and_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="request_timeout_ms"):
        KafkaConnectionConfig(request_timeout_ms=999)
    with pytest.raises(ValidationError, match="bootstrap_server"):
        KafkaConnectionConfig.model_validate({"bootstrap_server": "broker:9092"})


# --- resolve_kafka_secrets ------------------------------------------------------------------------------------


def test_bootstrap_comes_from_kafka_bootstrap_in_the_mapping_passed() -> None:
    resolved = resolve_kafka_secrets(KafkaConnectionConfig(), {"KAFKA_BOOTSTRAP": "broker-1:9093,broker-2:9093"})
    assert resolved.bootstrap_servers == "broker-1:9093,broker-2:9093"


@pytest.mark.parametrize("environ", [{}, {"KAFKA_BOOTSTRAP": ""}], ids=["unset", "empty"])
def test_bootstrap_defaults_to_localhost(environ: dict[str, str]) -> None:
    resolved = resolve_kafka_secrets(KafkaConnectionConfig(), environ)
    assert resolved.bootstrap_servers == DEFAULT_BOOTSTRAP == "127.0.0.1:9092"


def test_configured_bootstrap_wins_over_the_environment() -> None:
    connection = KafkaConnectionConfig(bootstrap_servers="configured:9092")
    resolved = resolve_kafka_secrets(connection, {"KAFKA_BOOTSTRAP": "from-env:9092"})
    assert resolved.bootstrap_servers == "configured:9092"


def test_password_comes_from_password_env() -> None:
    connection = KafkaConnectionConfig(
        security_protocol="SASL_SSL", sasl=scram(password=None, password_env="EVENTRAY_TEST_KAFKA_PASSWORD")
    )
    resolved = resolve_kafka_secrets(connection, {"EVENTRAY_TEST_KAFKA_PASSWORD": SECRET})
    assert resolved.sasl is not None
    assert resolved.sasl.password is not None
    assert resolved.sasl.password.get_secret_value() == SECRET
    assert resolved.sasl.password_env is None
    assert resolved.sasl.username == "svc-eventray"
    # The input is left as it was: configs are frozen values.
    assert connection.sasl is not None
    assert connection.sasl.password is None


def test_an_inline_password_is_kept() -> None:
    connection = KafkaConnectionConfig(security_protocol="SASL_SSL", sasl=scram())
    resolved = resolve_kafka_secrets(connection, {})
    assert resolved.sasl == connection.sasl


@pytest.mark.parametrize("environ", [{}, {"EVENTRAY_TEST_KAFKA_PASSWORD": ""}], ids=["unset", "empty"])
def test_a_missing_password_env_names_the_variable_and_the_operator_action(environ: dict[str, str]) -> None:
    connection = KafkaConnectionConfig(
        security_protocol="SASL_SSL", sasl=scram(password=None, password_env="EVENTRAY_TEST_KAFKA_PASSWORD")
    )
    with pytest.raises(ConfigError) as caught:
        resolve_kafka_secrets(connection, environ)
    message = str(caught.value)
    assert "kafka.sasl.password_env" in message
    assert "EVENTRAY_TEST_KAFKA_PASSWORD is not set" in message
    assert "Operator action: export EVENTRAY_TEST_KAFKA_PASSWORD" in message


# --- client_options -------------------------------------------------------------------------------------------


def test_client_options_for_plaintext() -> None:
    connection = resolve_kafka_secrets(KafkaConnectionConfig(request_timeout_ms=5_000), {"KAFKA_BOOTSTRAP": "b:1"})
    assert client_options(connection) == {
        "bootstrap_servers": "b:1",
        "security_protocol": "PLAINTEXT",
        "request_timeout_ms": 5_000,
    }


def test_client_options_without_resolving_use_the_default_bootstrap() -> None:
    assert client_options(KafkaConnectionConfig())["bootstrap_servers"] == DEFAULT_BOOTSTRAP


def test_client_options_for_sasl_ssl_with_scram() -> None:
    connection = KafkaConnectionConfig(
        bootstrap_servers="broker:9094",
        security_protocol="SASL_SSL",
        sasl=scram(mechanism="SCRAM-SHA-256", password=None, password_env="EVENTRAY_TEST_KAFKA_PASSWORD"),
    )
    options = client_options(resolve_kafka_secrets(connection, {"EVENTRAY_TEST_KAFKA_PASSWORD": SECRET}))
    context = options.pop("ssl_context")
    assert options == {
        "bootstrap_servers": "broker:9094",
        "security_protocol": "SASL_SSL",
        "request_timeout_ms": 30_000,
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "svc-eventray",
        "sasl_plain_password": SECRET,
    }
    assert type(options["sasl_plain_password"]) is str  # aiokafka needs the plain value, not a SecretStr
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname is True
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_client_options_for_sasl_plaintext_have_no_ssl_context() -> None:
    connection = KafkaConnectionConfig(security_protocol="SASL_PLAINTEXT", sasl=scram())
    options = client_options(connection)
    assert "ssl_context" not in options
    assert options["sasl_plain_password"] == SECRET


def test_client_options_refuse_an_unresolved_password_env() -> None:
    connection = KafkaConnectionConfig(
        security_protocol="SASL_SSL", sasl=scram(password=None, password_env="EVENTRAY_TEST_KAFKA_PASSWORD")
    )
    with pytest.raises(ConfigError, match="not resolved from password_env"):
        client_options(connection)


def _write_self_signed_ca(directory: Path) -> tuple[Path, Path]:
    """A throwaway self-signed CA: its certificate and its key (encrypted with KEY_PASSWORD), as PEM files."""
    cert_path, key_path = directory / "ca.pem", directory / "ca.key"
    if importlib.util.find_spec("cryptography") is not None:
        _write_with_cryptography(cert_path, key_path)
    else:
        _write_with_openssl(cert_path, key_path)
    return cert_path, key_path


def _write_with_openssl(cert_path: Path, key_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("neither the cryptography package nor openssl is available to make a test CA")
    command = [
        *(openssl, "req", "-x509", "-days", "1", "-subj", f"/CN={CA_COMMON_NAME}"),
        *("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
        *("-keyout", str(key_path), "-out", str(cert_path), "-passout", f"pass:{KEY_PASSWORD}"),
    ]
    subprocess.run(command, check=True, capture_output=True)


def _write_with_cryptography(cert_path: Path, key_path: Path) -> None:
    from cryptography import x509  # noqa: PLC0415 - optional: only when the package is installed
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_COMMON_NAME)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(KEY_PASSWORD.encode()),
        )
    )


@pytest.mark.parametrize("check_hostname", [True, False])
def test_client_options_for_ssl_load_the_ca_file(tmp_path: Path, check_hostname: bool) -> None:
    ca_file, _ = _write_self_signed_ca(tmp_path)
    connection = KafkaConnectionConfig(
        security_protocol="SSL", tls=TlsConfig(ca_file=str(ca_file), check_hostname=check_hostname)
    )
    options = client_options(connection)
    context = options["ssl_context"]
    assert options["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in options
    assert context.check_hostname is check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    subjects = [dict(part[0] for part in cert["subject"]) for cert in context.get_ca_certs()]
    assert subjects == [{"commonName": CA_COMMON_NAME}]


def test_client_options_for_mutual_tls_load_the_client_certificate(tmp_path: Path) -> None:
    # The throwaway CA's certificate and key double as a client certificate: loading checks only that they match.
    cert_file, key_file = _write_self_signed_ca(tmp_path)
    tls = TlsConfig(
        ca_file=str(cert_file), cert_file=str(cert_file), key_file=str(key_file), key_password=SecretStr(KEY_PASSWORD)
    )
    context = client_options(KafkaConnectionConfig(security_protocol="SSL", tls=tls))["ssl_context"]
    assert isinstance(context, ssl.SSLContext)


def test_client_options_for_mutual_tls_with_a_wrong_key_password_fail(tmp_path: Path) -> None:
    cert_file, key_file = _write_self_signed_ca(tmp_path)
    tls = TlsConfig(cert_file=str(cert_file), key_file=str(key_file), key_password=SecretStr("wrong"))
    with pytest.raises(ssl.SSLError):
        client_options(KafkaConnectionConfig(security_protocol="SSL", tls=tls))


def test_client_options_for_a_missing_ca_file_fail(tmp_path: Path) -> None:
    tls = TlsConfig(ca_file=str(tmp_path / "missing.pem"))
    with pytest.raises(FileNotFoundError):
        client_options(KafkaConnectionConfig(security_protocol="SSL", tls=tls))


# --- secrets stay hidden --------------------------------------------------------------------------------------


def _secret_laden_pipeline() -> PipelineConfig:
    return parse_config(
        {
            "name": "secrets",
            "source": {"type": "kafka", "topic": "orders"},
            "schema": {"fields": {"event_id": "string"}},
            "kafka": {
                "security_protocol": "SASL_SSL",
                "sasl": {"mechanism": "SCRAM-SHA-512", "username": "svc-eventray", "password": SECRET},
                "tls": {"cert_file": "c.pem", "key_file": "c.key", "key_password": KEY_PASSWORD},
            },
        }
    )


def test_secrets_never_appear_in_printed_or_serialised_configs() -> None:
    config = _secret_laden_pipeline()
    assert config.kafka is not None
    for shown in (repr(config), str(config), config.model_dump_json(), repr(config.kafka), str(config.kafka.sasl)):
        assert SECRET not in shown
        assert KEY_PASSWORD not in shown
    assert "**********" in config.model_dump_json()


def test_secrets_are_there_when_revealed() -> None:
    config = _secret_laden_pipeline()
    assert config.kafka is not None
    assert config.kafka.sasl is not None
    assert config.kafka.tls is not None
    assert config.kafka.sasl.password is not None
    assert config.kafka.tls.key_password is not None
    assert config.kafka.sasl.password.get_secret_value() == SECRET
    assert config.kafka.tls.key_password.get_secret_value() == KEY_PASSWORD


def test_a_resolved_password_is_hidden_too() -> None:
    connection = KafkaConnectionConfig(
        security_protocol="SASL_SSL", sasl=scram(password=None, password_env="EVENTRAY_TEST_KAFKA_PASSWORD")
    )
    resolved = resolve_kafka_secrets(connection, {"EVENTRAY_TEST_KAFKA_PASSWORD": SECRET})
    for shown in (repr(resolved), str(resolved), resolved.model_dump_json()):
        assert SECRET not in shown


# --- KafkaSourceConfig ----------------------------------------------------------------------------------------


def test_kafka_source_defaults() -> None:
    source = KafkaSourceConfig(topic="orders")
    assert (source.start, source.fallback, source.group_id, source.start_timestamp_ms) == (
        "committed",
        "earliest",
        None,
        None,
    )


def test_kafka_source_starts_at_a_timestamp() -> None:
    source = KafkaSourceConfig(topic="orders", start="timestamp", start_timestamp_ms=1_700_000_000_000)
    assert source.start_timestamp_ms == 1_700_000_000_000


def test_kafka_source_start_timestamp_needs_start_timestamp_ms() -> None:
    with pytest.raises(ValidationError, match="start: timestamp goes with start_timestamp_ms"):
        KafkaSourceConfig(topic="orders", start="timestamp")


@pytest.mark.parametrize("start", ["earliest", "latest", "committed"])
def test_kafka_source_start_timestamp_ms_needs_start_timestamp(
    start: Literal["earliest", "latest", "committed"],
) -> None:
    with pytest.raises(ValidationError, match="start: timestamp goes with start_timestamp_ms"):
        KafkaSourceConfig(topic="orders", start=start, start_timestamp_ms=0)


def test_kafka_source_refuses_an_empty_topic_and_a_negative_timestamp() -> None:
    with pytest.raises(ValidationError, match="topic"):
        KafkaSourceConfig(topic="")
    with pytest.raises(ValidationError, match="start_timestamp_ms"):
        KafkaSourceConfig(topic="orders", start="timestamp", start_timestamp_ms=-1)


# --- PipelineConfig with Kafka --------------------------------------------------------------------------------


def _pipeline_data(**sections: Any) -> dict[str, Any]:
    return {"name": "orders-kafka", "schema": {"fields": {"event_id": "string"}}} | sections


@pytest.mark.parametrize(
    "sections",
    [
        {"source": {"type": "kafka", "topic": "orders"}},
        {"source": {"type": "generator"}, "sinks": [{"type": "kafka", "topic": "out"}]},
        {"source": {"type": "generator"}, "dead_letter": {"type": "kafka", "topic": "dlq"}},
    ],
    ids=["source", "sink", "dead-letter"],
)
def test_kafka_without_a_kafka_section_fails_clearly(sections: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=r"Kafka sources and sinks need a kafka section \(at least: kafka: \{\}\)"):
        parse_config(_pipeline_data(**sections), "test.yaml")


def test_kafka_with_an_empty_kafka_section_is_accepted() -> None:
    config = parse_config(
        _pipeline_data(
            source={"type": "kafka", "topic": "orders"},
            sinks=[{"type": "kafka", "topic": "out", "key_column": "event_id"}],
            dead_letter={"type": "kafka", "topic": "dlq"},
            kafka={},
        )
    )
    assert config.kafka == KafkaConnectionConfig()


def test_group_id_defaults_to_eventray_and_the_pipeline_name() -> None:
    config = parse_config(_pipeline_data(source={"type": "kafka", "topic": "orders"}, kafka={}))
    assert config.group_id == "eventray-orders-kafka"


def test_group_id_is_the_configured_one() -> None:
    config = parse_config(
        _pipeline_data(source={"type": "kafka", "topic": "orders", "group_id": "team-orders"}, kafka={})
    )
    assert config.group_id == "team-orders"


def test_group_id_of_a_pipeline_without_a_kafka_source() -> None:
    config = parse_config(_pipeline_data(source={"type": "generator"}))
    assert config.group_id == "eventray-orders-kafka"


def test_the_sasl_user_name_can_come_from_the_environment() -> None:
    connection = KafkaConnectionConfig(
        security_protocol="SASL_SSL",
        sasl=SaslConfig(
            mechanism="SCRAM-SHA-512",
            username_env="KAFKA_SASL_USERNAME",
            password_env="KAFKA_SASL_PASSWORD",
        ),
    )

    resolved = resolve_kafka_secrets(connection, {"KAFKA_SASL_USERNAME": "svc", "KAFKA_SASL_PASSWORD": "pw"})

    assert resolved.sasl is not None and resolved.sasl.username == "svc"
    with pytest.raises(ConfigError, match="KAFKA_SASL_USERNAME"):
        resolve_kafka_secrets(connection, {"KAFKA_SASL_PASSWORD": "pw"})
