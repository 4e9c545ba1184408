"""Throwaway certificates for a secured dev broker, made with ``openssl`` at start.

One CA signs a broker certificate (subject ``CN=broker``, valid for ``127.0.0.1`` only: the address every
listener binds and advertises; ``localhost`` is not in it, so a client that checks host names refuses it by that
name) and a client certificate (``CN=eventray-client``, for mutual TLS). Private keys are unencrypted PKCS#8 PEM files,
readable by their owner only; they live in the broker's state dir and are made again on every start, so a
copied key is worth nothing after the next ``eventray kafka up --secure``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cluster.dev_services import last_lines

from ._errors import DevBrokerError
from ._tools import require_tool, run_tool

__all__ = ["BROKER_PRINCIPAL", "CLIENT_PRINCIPAL", "TlsFiles", "make_tls_files"]

BROKER_PRINCIPAL = "broker"
CLIENT_PRINCIPAL = "eventray-client"
_VALID_DAYS = "30"
_OPENSSL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class TlsFiles:
    """Where the certificates of one secured broker are (all PEM)."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    def cert(self, name: str) -> Path:
        return self.root / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.root / f"{name}.key"

    @property
    def broker_keystore(self) -> Path:
        """The broker's private key followed by its certificate: Kafka's PEM key store file."""
        return self.root / "broker.keystore.pem"


def make_tls_files(root: Path) -> TlsFiles:
    """Make a new CA, broker and client certificate under ``root`` (replacing any there); raise
    DevBrokerError naming the openssl step that failed."""
    files = TlsFiles(root)
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", _VALID_DAYS, "-subj", "/CN=eventray dev CA",
             "-keyout", str(files.ca_key), "-out", str(files.ca_cert))  # fmt: skip
    _signed(files, BROKER_PRINCIPAL, "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    _signed(files, CLIENT_PRINCIPAL, "extendedKeyUsage=clientAuth\n")
    files.broker_keystore.write_text(files.key(BROKER_PRINCIPAL).read_text() + files.cert(BROKER_PRINCIPAL).read_text())
    for path in root.iterdir():
        os.chmod(path, 0o600)
    return files


def _signed(files: TlsFiles, name: str, extensions: str) -> None:
    request = files.root / f"{name}.csr"
    extensions_file = files.root / f"{name}.ext"
    extensions_file.write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(files.key(name)),
             "-out", str(request))  # fmt: skip
    _openssl("x509", "-req", "-in", str(request), "-CA", str(files.ca_cert), "-CAkey", str(files.ca_key),
             "-CAcreateserial", "-days", _VALID_DAYS, "-extfile", str(extensions_file),
             "-out", str(files.cert(name)))  # fmt: skip
    request.unlink()
    extensions_file.unlink()


def _openssl(*arguments: str) -> None:
    done = run_tool([str(require_tool("openssl")), *arguments], _OPENSSL_TIMEOUT_S, f"openssl {arguments[0]}")
    if done.returncode != 0:
        raise DevBrokerError(
            f"openssl {arguments[0]} failed (exit {done.returncode}) making the dev broker's certificates:\n"
            f"{last_lines(done.stdout + done.stderr)}\n"
            "Operator action: check that `openssl version` works (OpenSSL 1.1.1 or newer)."
        )
