"""Secrets are read from the environment once, by the driver (the mask key of ``mask: hash``, Kafka's), or with
``runtime.secrets: environment`` by every process of the cluster from its own, none of them passing through Ray."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from ray import cloudpickle

from pipelines.config.pipeline import MaskOp, PipelineConfig, load_config
from pipelines.config.secrets import config_for_cluster, resolve_secrets, secrets_here
from pipelines.errors import ConfigError

ORDERS = Path(__file__).resolve().parents[2] / "configs" / "orders.yaml"
KEY = "k3y-" * 8


def test_the_mask_key_is_read_from_the_variable_the_operator_names() -> None:
    config = resolve_secrets(load_config(ORDERS), {"EVENTRAY_MASK_KEY": KEY})
    masks = [operator for operator in config.operators if isinstance(operator, MaskOp)]
    assert [mask.key.get_secret_value() for mask in masks if mask.key] == [KEY]
    other = load_config(
        ORDERS, {"operators": [{"op": "mask", "column": "email", "method": "hash", "key_env": "PII_KEY"}]}
    )
    assert resolve_secrets(other, {"PII_KEY": KEY}).operators[0].key is not None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("environ", "state"), [({}, "is not set"), ({"EVENTRAY_MASK_KEY": "short"}, "holds only 5 bytes")]
)
def test_a_missing_or_short_key_fails_naming_the_operator_the_variable_and_the_fix(
    environ: dict[str, str], state: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        resolve_secrets(load_config(ORDERS), environ)
    message = str(refused.value)
    assert message.startswith(
        f"operators.1 (mask email): method hash needs a secret key, and EVENTRAY_MASK_KEY {state}"
    )
    assert "openssl rand -hex 32" in message and "method: redact" in message


def test_a_redacting_mask_needs_no_key() -> None:
    config = load_config(ORDERS, {"operators": [{"op": "mask", "column": "email", "method": "redact"}]})
    assert resolve_secrets(config, {}).operators == config.operators


def test_a_resolved_key_travels_to_actors_but_is_never_printed_or_dumped() -> None:
    config = resolve_secrets(load_config(ORDERS), {"EVENTRAY_MASK_KEY": KEY})
    assert KEY not in config.to_yaml() and KEY not in repr(config) and KEY not in str(config)
    travelled = pickle.loads(pickle.dumps(config))  # as Ray ships the config to an actor
    assert [op.key.get_secret_value() for op in travelled.operators if isinstance(op, MaskOp) and op.key] == [KEY]


SECRETS = {
    "EVENTRAY_MASK_KEY": KEY,
    "EVENTRAY_CHECKPOINT_KEY": "c4" * 32,
    "EVENTRAY_DEAD_LETTER_KEY": "d1" * 32,
    "KAFKA_SASL_PASSWORD": "pa55-w0rd-of-the-pipeline",
}


def _secured(secrets_from: str) -> PipelineConfig:
    return load_config(ORDERS, {
        "runtime.secrets": secrets_from,
        "checkpoint.encryption": {},
        "dead_letter.payload": "encrypted",
        "kafka": {"security_protocol": "SASL_SSL", "sasl": {
            "mechanism": "SCRAM-SHA-512", "username": "pipeline", "password_env": "KAFKA_SASL_PASSWORD"}},
    })  # fmt: skip


def _secrets_in(config: PipelineConfig) -> list[str]:
    """The secret values in ``config`` as Ray would ship it to an actor (cloudpickle, like a creation argument)."""
    shipped = cloudpickle.dumps(config)
    return [name for name, value in SECRETS.items() if value.encode() in shipped]


def test_with_secrets_from_the_environment_the_cluster_gets_no_secret_and_each_process_reads_its_own() -> None:
    written = _secured("environment")
    resolved = resolve_secrets(written, SECRETS)  # what the driver checks
    shipped = config_for_cluster(written, resolved)
    assert _secrets_in(shipped) == []
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SECRETS.items():
            patch.setenv(name, value)
        here = secrets_here(pickle.loads(pickle.dumps(shipped)))
    assert sorted(_secrets_in(here)) == sorted(SECRETS), "an actor reads every one from its own environment"


def test_with_secrets_from_the_driver_it_hands_them_over_inside_the_config() -> None:
    """The control: the same search finds them when the driver resolves them for the actors."""
    written = _secured("driver")
    shipped = config_for_cluster(written, resolve_secrets(written, SECRETS))
    assert sorted(_secrets_in(shipped)) == sorted(SECRETS)
    assert secrets_here(shipped) is shipped, "an actor does not read its environment then"


def test_a_config_that_already_holds_secrets_is_refused_in_environment_mode() -> None:
    """E.g. resolved by the caller before ``run_pipeline``: shipping it would carry every secret through Ray."""
    resolved = resolve_secrets(_secured("environment"), SECRETS)
    with pytest.raises(ConfigError) as refused:
        config_for_cluster(resolved, resolved)
    assert str(refused.value).startswith(
        "runtime.secrets: environment, and the config holds secrets that would travel through Ray: operators.1.key, "
        "checkpoint.encryption.key, dead_letter.encryption.key, kafka.sasl.password."
    )


def test_in_environment_mode_the_brokers_address_is_the_drivers_and_a_node_missing_a_secret_is_named() -> None:
    written = _secured("environment")
    assert written.kafka is not None and written.kafka.bootstrap_servers is None
    shipped = config_for_cluster(written, resolve_secrets(written, {**SECRETS, "KAFKA_BOOTSTRAP": "broker-7:9093"}))
    assert shipped.kafka is not None and shipped.kafka.bootstrap_servers == "broker-7:9093"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SECRETS.items():
            patch.setenv(name, value)
        patch.delenv("KAFKA_SASL_PASSWORD")
        patch.delenv("KAFKA_BOOTSTRAP", raising=False)
        with pytest.raises(
            ConfigError,
            match=r"runtime.secrets: environment, and the Ray node .* lacks a secret: "
            r"kafka.sasl.password_env: environment variable KAFKA_SASL_PASSWORD",
        ):
            secrets_here(shipped)
        patch.setenv("KAFKA_SASL_PASSWORD", SECRETS["KAFKA_SASL_PASSWORD"])
        here = secrets_here(shipped)
    assert here.kafka is not None and here.kafka.bootstrap_servers == "broker-7:9093", "not the node's default"


def test_secrets_are_read_from_the_environment_by_default() -> None:
    assert load_config(ORDERS).runtime.secrets == "environment"
