"""TLS to a server (Kafka brokers, a schema registry): the CA that signed its certificate, and a client
certificate for mutual TLS."""

from __future__ import annotations

import ssl

from pydantic import Field, SecretStr, model_validator

from pipelines.config.base import ConfigModel

__all__ = ["TlsConfig", "tls_context"]


class TlsConfig(ConfigModel):
    ca_file: str | None = Field(default=None, description="CA bundle that signed the brokers' certificates")
    cert_file: str | None = Field(default=None, description="client certificate, for mutual TLS")
    key_file: str | None = Field(default=None, description="client private key, for mutual TLS")
    key_password: SecretStr | None = None
    check_hostname: bool = True

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        return self


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """An SSL context that trusts ``tls.ca_file`` and presents the client certificate, if any."""
    context = ssl.create_default_context(cafile=tls.ca_file)
    context.check_hostname = tls.check_hostname
    if tls.cert_file is not None and tls.key_file is not None:
        password = tls.key_password.get_secret_value() if tls.key_password else None
        context.load_cert_chain(tls.cert_file, tls.key_file, password=password)
    return context
