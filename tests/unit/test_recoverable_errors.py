"""Which failures the Supervisor restores from: actor deaths and Kafka errors that may pass, also when they reach
it wrapped by Ray or raised from another error; not configuration or data errors."""

from __future__ import annotations

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
    TopicAuthorizationFailedError,
)
from ray.exceptions import RayTaskError

from cluster.handles import RayActors, transient_kafka_error
from pipelines.errors import ConfigError, RetriableError


def wrapped(cause: BaseException) -> RayTaskError:
    """As an actor's exception reaches the Supervisor through Ray."""
    return RayTaskError("AggregateActor.complete", "Traceback (most recent call last): ...", cause)


def raised_from(cause: BaseException) -> RuntimeError:
    try:
        try:
            raise cause
        except BaseException as inner:
            raise RuntimeError("commit failed") from inner
    except RuntimeError as outer:
        return outer


@pytest.mark.parametrize(
    "error",
    [KafkaConnectionError("connection closed"), NodeNotReadyError(), RequestTimedOutError(),
     KafkaTimeoutError(), RetriableError("try again")],
)  # fmt: skip
def test_kafka_errors_that_may_pass_are_transient_plain_wrapped_or_as_a_cause(error: Exception) -> None:
    assert transient_kafka_error(error)
    assert transient_kafka_error(wrapped(error))
    assert transient_kafka_error(raised_from(error))
    assert RayActors().recoverable(wrapped(error))


@pytest.mark.parametrize(
    "error",
    [TopicAuthorizationFailedError(), ConfigError("source.topic: no such topic"), ValueError("bad value")],
)
def test_errors_that_will_not_pass_by_waiting_are_not_recovered(error: Exception) -> None:
    assert not transient_kafka_error(wrapped(error))
    assert not RayActors().recoverable(wrapped(error))
