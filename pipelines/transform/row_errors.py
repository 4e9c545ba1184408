"""Rows whose values an expression cannot compute: found by bisection, named without their values.

At run time an expression that raises on a batch raises because of some rows' values (a checked overflow, a
cast that fails), not because of types: the types are those of the schema, and :func:`pipelines.stages.plan._dry_run`
runs every operator on an empty batch of them before anything starts. An expression is evaluated row by row
(no row's result depends on another row), so the rows that make a batch fail are exactly the rows that fail on
their own. :func:`rows_failing_alone` finds them with :func:`pipelines.transform.bisection.failing_positions`: k of
them in a batch of n cost at most ``2 k (log2(n) + 1) + 2`` runs of the expression.

A row's reason (:func:`classify`) is written in eventray's own words, never in the library's: Arrow's messages
sometimes quote the value (``Failed to parse string: '4111 1111 1111 1111'``), and a dead letter's reason must
not carry event data.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa

from pipelines.errors import EventrayError, ExpressionError
from pipelines.transform.bisection import failing_positions

__all__ = ["VALUE_ERRORS", "RowValueError", "classify", "rows_failing_alone"]


class RowValueError(EventrayError):
    """An operator's own verdict on a row's value, in eventray's words (never the value): used as the reason."""


#: What evaluating an expression raises when it cannot compute some rows' values.
VALUE_ERRORS: tuple[type[Exception], ...] = (
    RowValueError,
    ExpressionError,
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    pa.ArrowNotImplementedError,
    OverflowError,
)


def rows_failing_alone(count: int, run: Callable[[int, int], object]) -> dict[int, str]:
    """The rows in ``range(count)`` on which the operation fails on their own, in order, each with why
    (:func:`classify`). ``run(start, stop)`` runs the operation on rows ``start`` to ``stop`` (excluded); it
    fails when it raises one of :data:`VALUE_ERRORS`. Call it once the operation failed on all ``count`` rows.

    Empty when no row fails alone: the error is then not about single rows, and the caller should raise it.
    Raises what ``run(0, 0)`` raises: an operation that fails on no rows at all fails on types, not values.
    """
    run(0, 0)
    reasons: dict[int, str] = {}

    def passes(start: int, stop: int) -> bool:
        try:
            run(start, stop)
        except VALUE_ERRORS as error:
            if stop - start == 1:  # failing_positions reports a row only after it failed alone, here
                reasons[start] = classify(error)
            return False
        return True

    return {row: reasons[row] for row in failing_positions(count, passes)}


def classify(error: BaseException) -> str:
    """Why a row's value could not be computed, in eventray's words (see the module docstring)."""
    # An ExpressionError quotes the expression, whose column names could mislead the match below: look at the
    # library's error it was raised from (its context: the evaluator raises it `from None`, which hides the
    # context from tracebacks but keeps it).
    if isinstance(error, RowValueError):
        return str(error)
    while isinstance(error, ExpressionError) and error.__context__ is not None:
        error = error.__context__
    # The library's wording only picks one of eventray's own texts; a fallback is always given.
    message = str(error).lower()
    if isinstance(error, OverflowError) or "overflow" in message:
        return "integer overflow"
    if any(word in message for word in ("cast", "pars", "convert", "truncat")):
        return "a failed cast"
    return "an invalid value for the operation"
