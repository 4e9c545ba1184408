"""Every secret a pipeline needs, read from the environment: by the driver before anything runs, and by the
processes that use them (``runtime.secrets``).

Secrets are named in configs by environment variable only (``kafka.sasl.password_env``, a mask's ``key_env``,
``checkpoint.encryption.key_env``, ``dead_letter.encryption.key_env``);
:func:`resolve_secrets` reads them into ``SecretStr`` fields that are never printed, logged or dumped. A missing
one fails here, naming the field and the variable.

``runtime.secrets`` says where they are read for the actors:

- ``environment`` (the default): the driver resolves them only to check that they are there; the Supervisor and
  every actor get the config as written (:func:`config_for_cluster`) and read them from their own process
  environment (:func:`secrets_here`), so no secret passes through Ray. The Ray nodes must have them: Kubernetes
  Secrets as environment variables, or the environment of ``ray start``; an embedded Ray inherits the driver's.
  A node without one fails the run at once, naming it.
- ``driver``: the driver resolves them and they travel to the actors inside the config, that is inside the
  actors' creation arguments, which Ray's GCS holds for the life of the actors (never in logs or dashboards).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import TypeVar

from pydantic import SecretStr

from pipelines.at_rest import parse_key
from pipelines.config.dead_letter import DeadLetterContent
from pipelines.config.kafka import resolve_kafka_secrets
from pipelines.config.pipeline import MaskOp, OperatorConfig, PipelineConfig
from pipelines.errors import ConfigError, FatalError

__all__ = [
    "MIN_MASK_KEY_BYTES",
    "config_for_cluster",
    "resolve_checkpoint_key",
    "resolve_secrets",
    "secrets_carried",
    "secrets_here",
]

MIN_MASK_KEY_BYTES = 16
DeadLetterContentT = TypeVar("DeadLetterContentT", bound=DeadLetterContent)


def resolve_secrets(config: PipelineConfig, environ: Mapping[str, str]) -> PipelineConfig:
    """``config`` with its Kafka bootstrap and credentials and its mask keys read from ``environ``."""
    update: dict[str, object] = {}
    if config.kafka is not None:
        update["kafka"] = resolve_kafka_secrets(config.kafka, environ)
    if config.checkpoint is not None:
        update["checkpoint"] = resolve_checkpoint_key(config, environ).checkpoint
    if config.dead_letter.encrypts and config.dead_letter.encryption.key is None:
        update["dead_letter"] = _with_dead_letter_key(config.dead_letter, environ)
    operators = _with_mask_keys(config.operators, environ, "")
    if operators != list(config.operators):
        update["operators"] = operators
    if config.inputs is not None:
        inputs = {
            name: spec.model_copy(update={"operators": _with_mask_keys(spec.operators, environ, f"inputs.{name}.")})
            for name, spec in config.inputs.items()
        }
        if inputs != config.inputs:
            update["inputs"] = inputs
    return config.model_copy(update=update) if update else config


def _with_mask_keys(operators: list[OperatorConfig], environ: Mapping[str, str], path: str) -> list[OperatorConfig]:
    return [
        _with_key(f"{path}operators.{index}", operator, environ)
        if isinstance(operator, MaskOp) and operator.needs_key
        else operator
        for index, operator in enumerate(operators)
    ]


def config_for_cluster(written: PipelineConfig, resolved: PipelineConfig) -> PipelineConfig:
    """What the driver hands to the Supervisor: ``resolved`` (secrets inside), or with ``runtime.secrets:
    environment`` the config as ``written``, which must hold no secret (ConfigError naming the ones it holds)."""
    if written.runtime.secrets != "environment":
        return resolved
    carried = secrets_carried(written)
    if carried:
        raise ConfigError(
            f"runtime.secrets: environment, and the config holds secrets that would travel through Ray: "
            f"{', '.join(carried)}. Operator action: name them by variable (password_env, key_env) and pass the "
            "config as written, not after resolve_secrets"
        )
    if written.kafka is not None and resolved.kafka is not None:  # the brokers' address is no secret: the driver's
        kafka = written.kafka.model_copy(update={"bootstrap_servers": resolved.kafka.bootstrap_servers})
        return written.model_copy(update={"kafka": kafka})
    return written


def secrets_carried(config: PipelineConfig) -> list[str]:
    """The fields of ``config`` that hold a secret value (written inline, or resolved already)."""
    carried = [f"{spec.path}operators.{index}.key" for spec in config.all_inputs
               for index, operator in enumerate(spec.operators)
               if isinstance(operator, MaskOp) and operator.key is not None]  # fmt: skip
    if config.checkpoint is not None and config.checkpoint.encryption is not None:
        carried += ["checkpoint.encryption.key"] if config.checkpoint.encryption.key is not None else []
    carried += ["dead_letter.encryption.key"] if config.dead_letter.encryption.key is not None else []
    kafka = config.kafka
    if kafka is not None and kafka.sasl is not None and kafka.sasl.password is not None:
        carried.append("kafka.sasl.password")
    if kafka is not None and kafka.tls is not None and kafka.tls.key_password is not None:
        carried.append("kafka.tls.key_password")
    carried += ["tracing.otlp_headers"] if config.tracing.otlp_headers else []
    return carried


def secrets_here(config: PipelineConfig) -> PipelineConfig:
    """In the Supervisor and the actors: ``config`` with its secrets read from this process's environment when
    ``runtime.secrets`` is ``environment``; as it came otherwise (the driver resolved them)."""
    if config.runtime.secrets != "environment":
        return config
    try:
        return resolve_secrets(config, os.environ)
    except FatalError as error:
        raise ConfigError(
            f"runtime.secrets: environment, and the Ray node {socket.gethostname()} lacks a secret: {error}. "
            "Operator action: start every Ray node with the secrets in its environment (Kubernetes Secrets as "
            "environment variables, or exported before `ray start`), or set runtime.secrets: driver"
        ) from None


def resolve_checkpoint_key(config: PipelineConfig, environ: Mapping[str, str]) -> PipelineConfig:
    """``config`` with the key of its encrypted checkpoints (if they are) read from ``environ``: all that reading
    checkpoints needs (``eventray lag``, ``verify``)."""
    checkpoint = config.checkpoint
    if checkpoint is None or checkpoint.encryption is None or checkpoint.encryption.key is not None:
        return config
    encryption = checkpoint.encryption
    key = parse_key(environ.get(encryption.key_env, ""), encryption.key_env)  # checks it, fails naming it
    resolved = encryption.model_copy(update={"key": SecretStr(key.hex())})
    return config.model_copy(update={"checkpoint": checkpoint.model_copy(update={"encryption": resolved})})


def _with_dead_letter_key(dead_letter: DeadLetterContentT, environ: Mapping[str, str]) -> DeadLetterContentT:
    encryption = dead_letter.encryption
    key = parse_key(environ.get(encryption.key_env, ""), encryption.key_env, field="dead_letter.encryption")
    resolved = encryption.model_copy(update={"key": SecretStr(key.hex())})
    return dead_letter.model_copy(update={"encryption": resolved})


def _with_key(field: str, operator: MaskOp, environ: Mapping[str, str]) -> MaskOp:
    if operator.key is not None:
        return operator
    key = environ.get(operator.key_env, "")
    if len(key.encode()) < MIN_MASK_KEY_BYTES:
        state = "is not set" if not key else f"holds only {len(key.encode())} bytes"
        raise ConfigError(
            f"{field} (mask {operator.column}): method hash needs a secret key, and {operator.key_env} "
            f"{state}. Operator action: export {operator.key_env} with at least {MIN_MASK_KEY_BYTES} random bytes "
            "(e.g. `openssl rand -hex 32`), the same for every run whose hashes must join; or use method: redact"
        )
    return operator.model_copy(update={"key": SecretStr(key)})
