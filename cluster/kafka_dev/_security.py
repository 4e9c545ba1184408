"""The users of a secured dev broker and how a client connects to it.

Two SCRAM-SHA-512 users are created when the storage is formatted: ``admin`` (a super user, for set-up and
ACLs) and ``pipeline`` (may do only what ACLs allow: the principal a pipeline runs as). Their passwords are
random, kept in ``<state dir>/secrets/<user>.password`` (mode 0600) and reused while the data is kept.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.config.kafka import KafkaConnectionConfig, client_options

from ._properties import ADMIN_USER, SCRAM_MECHANISM
from ._tls import TlsFiles

__all__ = ["PIPELINE_USER", "SCRAM_USERS", "BrokerSecurity"]

PIPELINE_USER = "pipeline"
SCRAM_USERS = (ADMIN_USER, PIPELINE_USER)


@dataclass(frozen=True)
class BrokerSecurity:
    """What a client of one secured broker needs: its listeners, CA, client certificate and users."""

    bootstrap: str
    mtls_bootstrap: str
    tls: TlsFiles
    secrets_dir: Path

    def password_file(self, user: str) -> Path:
        return self.secrets_dir / f"{user}.password"

    def password(self, user: str) -> str:
        return self.password_file(user).read_text().strip()

    def ensure_passwords(self, keep: bool) -> None:
        """Give every user a password file: new random ones, or, with ``keep``, those already there."""
        self.secrets_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.secrets_dir, 0o700)
        for user in SCRAM_USERS:
            path = self.password_file(user)
            if keep and path.is_file():
                continue
            path.touch(mode=0o600)
            path.write_text(secrets.token_hex(16) + "\n")

    def scram_format_arguments(self) -> list[str]:
        """``StorageTool format`` arguments creating every user's SCRAM credential."""
        arguments: list[str] = []
        for user in SCRAM_USERS:
            arguments += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={self.password(user)}]"]
        return arguments

    def sasl_connection(self, user: str, password_env: str | None = None) -> KafkaConnectionConfig:
        """A connection as ``user`` over SASL_SSL: the password itself, or, with ``password_env``, the name of
        the environment variable a pipeline reads it from."""
        password: dict[str, Any] = {"password_env": password_env} if password_env else {"password": self.password(user)}
        return KafkaConnectionConfig.model_validate(
            {
                "bootstrap_servers": self.bootstrap,
                "security_protocol": "SASL_SSL",
                "tls": {"ca_file": str(self.tls.ca_cert)},
                "sasl": {"mechanism": SCRAM_MECHANISM, "username": user, **password},
            }
        )

    def mtls_connection(self, client: str) -> KafkaConnectionConfig:
        """A connection over mutual TLS with the certificate ``client`` (``User:<client>`` to the broker)."""
        return KafkaConnectionConfig.model_validate(
            {
                "bootstrap_servers": self.mtls_bootstrap,
                "security_protocol": "SSL",
                "tls": {
                    "ca_file": str(self.tls.ca_cert),
                    "cert_file": str(self.tls.cert(client)),
                    "key_file": str(self.tls.key(client)),
                },
            }
        )

    def admin_options(self) -> dict[str, Any]:
        """aiokafka keyword arguments for the ``admin`` super user (readiness probe, ACLs)."""
        return client_options(self.sasl_connection(ADMIN_USER))
