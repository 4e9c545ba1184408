"""Secrets are read from the environment once, by the driver: the mask key of ``mask: hash`` and Kafka's."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from pipelines.config import MaskOp, load_config
from pipelines.errors import ConfigError
from pipelines.secrets import resolve_secrets

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
