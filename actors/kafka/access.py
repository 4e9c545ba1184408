"""Why Kafka refuses a pipeline, in words an operator can act on.

aiokafka reports most refusals as "Unable to bootstrap" or "Connection closed": a wrong password, a plaintext
client at a TLS listener, a missing client certificate and a SASL listener reached without SASL all look the
same. :func:`check_kafka_access` connects once, before a pipeline starts, and on a refusal probes the listener
to name the cause (:class:`~pipelines.errors.KafkaAccessDenied`). :func:`explain_denied` turns the
authorization errors a running pipeline meets (a missing ACL) into the same kind of message, naming the resource
and the operations this pipeline needs on it.

Causes are told apart by protocol facts (TLS alerts and certificate verification codes, SASL handshake
responses, Kafka error classes), never by the wording of a library's message.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.protocol.admin import SaslHandShakeRequest
from aiokafka.protocol.metadata import MetadataRequest

from pipelines.config.kafka import KafkaConnectionConfig, client_options
from pipelines.config.pipeline import PipelineConfig
from pipelines.errors import KafkaAccessDenied, causes
from pipelines.io.kafka_acls import AclBinding, ResourceType, required_acls

__all__ = ["check_kafka_access", "explain_denied", "principal"]

_PROBE_TIMEOUT_S = 10.0
_UNTRUSTED_ISSUER = {2, 18, 19, 20, 21}  # X509_V_ERR_*: unable to get issuer / self-signed / unable to verify
_NAME_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH
_EXPIRED = {9, 10}  # X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CERT_HAS_EXPIRED
# An ApiVersions v0 request (key 18), correlation id 1, client id "eventray": what a probe sends after TLS.
_API_VERSIONS_REQUEST = b"\x00\x00\x00\x12\x00\x12\x00\x00\x00\x00\x00\x01\x00\x08eventray"


async def check_kafka_access(connection: KafkaConnectionConfig) -> None:
    """Connect to the first bootstrap address that accepts TCP and ask for metadata, as the pipeline will;
    raise :class:`KafkaAccessDenied` naming the cause if TLS or SASL refuses it. An address that does not
    accept TCP at all is left to the pipeline's own retries (a broker may be starting)."""
    options = client_options(connection)
    options.pop("bootstrap_servers")
    options["request_timeout_ms"] = min(connection.request_timeout_ms, int(_PROBE_TIMEOUT_S * 1000))
    for address in (connection.bootstrap_servers or "").split(","):
        host, _, port_text = address.strip().rpartition(":")
        if not port_text.isdigit() or not await _accepts_tcp(host, int(port_text)):
            continue
        port = int(port_text)
        try:
            conn = await create_conn(host, port, **options)
            try:
                await conn.send(MetadataRequest([]))
            finally:
                conn.close()
        except (OSError, KafkaConnectionError, SaslAuthenticationFailed, UnsupportedSaslMechanismError) as error:
            denied = await _explain(connection, host, port, error)
            if denied is not None:
                raise denied from None
        return  # let in, or refused for no reason found here (a broker restarting): the run's own retries tell


async def _explain(
    connection: KafkaConnectionConfig, host: str, port: int, error: BaseException
) -> KafkaAccessDenied | None:
    """The refusal's cause, or None when the listener shows no TLS or SASL reason for it."""
    where = f"{host}:{port}"
    protocol = connection.security_protocol
    if isinstance(error, SaslAuthenticationFailed):
        assert connection.sasl is not None  # only a SASL client authenticates
        return KafkaAccessDenied(
            f"Kafka at {where}: authentication failed for user {connection.sasl.username!r} "
            f"({connection.sasl.mechanism}). Operator action: check kafka.sasl.username and the password, and that "
            f"the user has a {connection.sasl.mechanism} credential on the cluster"
        )
    if isinstance(error, UnsupportedSaslMechanismError):
        assert connection.sasl is not None
        enabled = await _sasl_mechanisms(connection, host, port)
        return KafkaAccessDenied(
            f"Kafka at {where} does not accept SASL mechanism {connection.sasl.mechanism}; it accepts "
            f"{', '.join(enabled) or 'none'}. Operator action: set kafka.sasl.mechanism to one of those"
        )
    if isinstance(error, ssl.SSLCertVerificationError):
        return KafkaAccessDenied(_certificate_refused(connection, where, error))
    if isinstance(error, ssl.SSLError):
        return KafkaAccessDenied(f"Kafka at {where}: the TLS handshake failed ({error.reason}). {_TLS_ACTION}")
    return await _explain_closed(connection, host, port, protocol, error)


_TLS_ACTION = "Operator action: check kafka.security_protocol and kafka.tls against the listener's settings"


def _certificate_refused(connection: KafkaConnectionConfig, where: str, error: ssl.SSLCertVerificationError) -> str:
    ca_file = connection.tls.ca_file if connection.tls is not None else None
    trusted = f"kafka.tls.ca_file ({ca_file})" if ca_file else "the system's CA store (kafka.tls.ca_file is unset)"
    if error.verify_code in _UNTRUSTED_ISSUER:
        return (
            f"Kafka at {where}: the broker's certificate is not signed by a CA in {trusted}. Operator action: set "
            "kafka.tls.ca_file to the CA bundle that signed the brokers' certificates"
        )
    if error.verify_code in _NAME_MISMATCH:
        return (
            f"Kafka at {where}: the broker's certificate is not valid for {where.rpartition(':')[0]!r}. Operator "
            "action: connect by a name or address the certificate lists (bootstrap_servers), or reissue it"
        )
    if error.verify_code in _EXPIRED:
        return f"Kafka at {where}: the broker's certificate is expired or not yet valid. Operator action: renew it"
    return f"Kafka at {where}: the broker's certificate was refused ({error.verify_message}). {_TLS_ACTION}"


async def _explain_closed(
    connection: KafkaConnectionConfig, host: str, port: int, protocol: str, error: BaseException
) -> KafkaAccessDenied | None:
    """The broker closed the connection (or did not answer): find out what the listener expected; None when
    nothing says (a broker that is restarting closes connections too)."""
    where = f"{host}:{port}"
    if protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        if await asyncio.to_thread(_speaks_tls, host, port):
            return KafkaAccessDenied(
                f"Kafka at {where} speaks TLS, and this client connected without it ({protocol}). Operator action: "
                "set kafka.security_protocol to SSL or SASL_SSL, with kafka.tls.ca_file"
            )
        return None
    alert = await asyncio.to_thread(_tls_alert_after_handshake, connection, host, port)
    has_certificate = connection.tls is not None and connection.tls.cert_file is not None
    if alert is not None and not has_certificate:
        return KafkaAccessDenied(
            f"Kafka at {where} requires a client certificate (mutual TLS), and this client sent none ({alert}). "
            "Operator action: set kafka.tls.cert_file and kafka.tls.key_file"
        )
    if alert is not None:
        return KafkaAccessDenied(
            f"Kafka at {where} refused this client's certificate ({alert}). Operator action: use a certificate "
            "signed by a CA the brokers trust (kafka.tls.cert_file, kafka.tls.key_file)"
        )
    if protocol == "SSL" and (enabled := await _sasl_mechanisms(connection, host, port)):
        return KafkaAccessDenied(
            f"Kafka at {where} expects SASL ({', '.join(enabled)}) over TLS, and this client connected with "
            "TLS alone. Operator action: set kafka.security_protocol: SASL_SSL and a kafka.sasl section"
        )
    return None


async def _sasl_mechanisms(connection: KafkaConnectionConfig, host: str, port: int) -> list[str]:
    """The SASL mechanisms the listener offers (empty when it does not speak SASL at all)."""
    options = client_options(connection)
    for key in ("bootstrap_servers", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
        options.pop(key, None)
    tls = connection.security_protocol in ("SSL", "SASL_SSL")
    options["security_protocol"] = "SSL" if tls else "PLAINTEXT"
    options["request_timeout_ms"] = int(_PROBE_TIMEOUT_S * 1000)
    try:
        conn = await create_conn(host, port, **options)
    except (OSError, KafkaConnectionError):
        return []
    try:
        response: Any = await conn.send(SaslHandShakeRequest("PLAIN"))
    except KafkaConnectionError:
        return []
    finally:
        conn.close()
    return list(response.enabled_mechanisms)


async def _accepts_tcp(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), _PROBE_TIMEOUT_S)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


def _speaks_tls(host: str, port: int) -> bool:
    """Whether the listener completes a TLS handshake (certificate not checked: only the protocol is asked)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), _PROBE_TIMEOUT_S) as raw, context.wrap_socket(raw):
            return True
    except OSError:
        return False


def _tls_alert_after_handshake(connection: KafkaConnectionConfig, host: str, port: int) -> str | None:
    """The TLS alert the listener sends once this client's handshake is done and a request follows (TLS 1.3
    refuses a missing or unknown client certificate only then), as OpenSSL's reason code; None without one."""
    options = client_options(connection)
    context: ssl.SSLContext = options["ssl_context"]
    try:
        with (
            socket.create_connection((host, port), _PROBE_TIMEOUT_S) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.sendall(_API_VERSIONS_REQUEST)
            tls.recv(4)
    except ssl.SSLError as error:
        reason = str(error.reason)
        return reason if "ALERT" in reason else None  # an alert the peer sent, not a connection that just ended
    except OSError:
        return None
    return None


def principal(connection: KafkaConnectionConfig) -> str:
    """Who the brokers take this connection for, as their authorizer names it."""
    if connection.sasl is not None and connection.sasl.username is not None:
        return f"User:{connection.sasl.username}"
    if connection.tls is not None and connection.tls.cert_file is not None:
        return f"the principal of client certificate {connection.tls.cert_file}"
    return "User:ANONYMOUS"


def explain_denied(error: BaseException, config: PipelineConfig) -> KafkaAccessDenied | None:
    """A :class:`KafkaAccessDenied` for an authorization error of Kafka in ``error``'s causes (through Ray's
    wrapping), naming the principal, the resource and what ``config`` needs on it; None for any other error."""
    if config.kafka is None:
        return None
    who = principal(config.kafka)
    needed = required_acls(config)
    kinds = (
        (TopicAuthorizationFailedError, "topic", ResourceType.TOPIC),
        (GroupAuthorizationFailedError, "consumer group", ResourceType.GROUP),
        (TransactionalIdAuthorizationFailed, "transactional id", ResourceType.TRANSACTIONAL_ID),
    )
    # Ray's wrapper of an actor's error passes for the error's class too, with Ray's arguments: skip it
    chain = [cause for cause in causes(error) if getattr(cause, "cause", None) is None]
    for kind, what, resource in kinds:
        found = [cause for cause in chain if isinstance(cause, kind)]
        if found:  # aiokafka re-raises some with the resource's name, from one without it
            names = next((names for cause in found if (names := _names(cause))), [])
            return _denied(who, what, resource, names, needed)
    return None


def _names(error: BaseException) -> list[str]:
    """The resource names aiokafka puts in an authorization error's arguments (a name, or a set of them)."""
    names: list[str] = []
    for argument in error.args:
        if isinstance(argument, str):
            names.append(argument)
        elif isinstance(argument, set | frozenset | list | tuple):
            names.extend(str(item) for item in argument)
    return sorted(names)


def _denied(who: str, what: str, kind: ResourceType, names: list[str], needed: list[AclBinding]) -> KafkaAccessDenied:
    resources = ", ".join(repr(name) for name in names) or "(name not reported)"
    wanted = sorted({b.operation.name.title() for b in needed if b.resource_type is kind and _matches(b, names)})
    operations = f" This pipeline needs on it: {', '.join(wanted)}." if wanted else ""
    return KafkaAccessDenied(
        f"Kafka denied {who} access to {what} {resources}.{operations} Operator action: grant the ACLs "
        "`eventray acls CONFIG` lists, or run as a principal that has them"
    )


def _matches(binding: AclBinding, names: list[str]) -> bool:
    if binding.pattern_type.name == "PREFIXED":
        return any(name.startswith(binding.resource_name) for name in names)
    return binding.resource_name in names
