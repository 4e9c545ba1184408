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
from ray.exceptions import ActorDiedError, RayTaskError

from cluster.control.handles import RayActors, transient_kafka_error
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


def test_an_actor_that_died_is_recoverable_but_not_one_whose_init_raised_a_fatal_error() -> None:
    """A secret missing from a node's environment (runtime.secrets: environment) fails every restart alike; an
    ``__init__`` that met something passing (a storage error) is restored from as before."""

    def init_raised(error: Exception) -> ActorDiedError:
        traceback = f"Traceback (most recent call last): ...\n{type(error).__module__}.{type(error).__name__}: {error}"
        return ActorDiedError(RayTaskError("SourceActor.__init__", traceback, error))

    missing_key = init_raised(ConfigError("operators.1 (mask email): method hash needs a secret key"))
    assert not RayActors().recoverable(missing_key)
    assert not RayActors().recoverable(wrapped(missing_key))
    assert RayActors().recoverable(init_raised(OSError("checkpoint storage unreachable")))
    assert RayActors().recoverable(ActorDiedError())
    assert RayActors().recoverable(wrapped(ActorDiedError()))
