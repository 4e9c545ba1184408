"""The dev schema registry against a real JVM, through the Confluent-compatible API a producer's serializer uses:
register, look up by id, per-subject BACKWARD compatibility, and the 409 of an incompatible register.

Needs neither Kafka nor Ray: only the session's ``schema_registry_url``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"

ORDER_V1 = {
    "type": "record",
    "name": "Order",
    "namespace": "dev.eventray.test",
    "fields": [{"name": "order_id", "type": "string"}, {"name": "amount_cents", "type": "long"}],
}
# BACKWARD: a reader on the new schema can read data written with the old one. A new field with a default can...
ORDER_V2_COMPATIBLE = {
    **ORDER_V1,
    "fields": [*ORDER_V1["fields"], {"name": "currency", "type": "string", "default": "EUR"}],
}
# ...a new field without one cannot (old records lack it).
ORDER_V2_INCOMPATIBLE = {**ORDER_V1, "fields": [*ORDER_V1["fields"], {"name": "currency", "type": "string"}]}


class HttpStatusError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body}")
        self.status = status


def _call(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": CONTENT_TYPE})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        raise HttpStatusError(error.code, error.read().decode(errors="replace")) from None


def _schema(record: dict[str, Any]) -> dict[str, Any]:
    return {"schema": json.dumps(record)}


@pytest.fixture
def subject() -> str:
    return f"orders-{uuid.uuid4().hex[:12]}-value"


def test_register_and_fetch_by_id(schema_registry_url: str, subject: str) -> None:
    registered = _call("POST", f"{schema_registry_url}/subjects/{subject}/versions", _schema(ORDER_V1))
    schema_id = registered["id"]

    fetched = _call("GET", f"{schema_registry_url}/schemas/ids/{schema_id}")
    versions = _call("GET", f"{schema_registry_url}/subjects/{subject}/versions")
    looked_up = _call("POST", f"{schema_registry_url}/subjects/{subject}", _schema(ORDER_V1))

    assert isinstance(schema_id, int)
    assert json.loads(fetched["schema"]) == ORDER_V1
    assert versions == [1]
    assert looked_up["id"] == schema_id
    assert looked_up["version"] == 1
    assert subject in _call("GET", f"{schema_registry_url}/subjects")


def test_backward_compatibility_is_checked_and_enforced(schema_registry_url: str, subject: str) -> None:
    _call("POST", f"{schema_registry_url}/subjects/{subject}/versions", _schema(ORDER_V1))
    configured = _call("PUT", f"{schema_registry_url}/config/{subject}", {"compatibility": "BACKWARD"})
    latest = f"{schema_registry_url}/compatibility/subjects/{subject}/versions/latest"

    compatible = _call("POST", latest, _schema(ORDER_V2_COMPATIBLE))
    incompatible = _call("POST", latest, _schema(ORDER_V2_INCOMPATIBLE))
    with pytest.raises(HttpStatusError) as refused:
        _call("POST", f"{schema_registry_url}/subjects/{subject}/versions", _schema(ORDER_V2_INCOMPATIBLE))
    accepted = _call("POST", f"{schema_registry_url}/subjects/{subject}/versions", _schema(ORDER_V2_COMPATIBLE))

    assert configured == {"compatibility": "BACKWARD"}
    assert _call("GET", f"{schema_registry_url}/config/{subject}") == {"compatibilityLevel": "BACKWARD"}
    assert compatible["is_compatible"] is True
    assert incompatible["is_compatible"] is False
    assert refused.value.status == 409
    assert _call("GET", f"{schema_registry_url}/subjects/{subject}/versions") == [1, 2]
    assert accepted["id"] != _call("GET", f"{schema_registry_url}/subjects/{subject}/versions/1")["id"]
