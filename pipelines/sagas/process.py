"""An orchestrated saga as a keyed process function: the saga stage (``keyed: {type: saga}``).

:class:`SagaProcess` reads each row of a saga id in arrival order: a start (its type is the saga's ``start`` and
it answers no command) or a reply; :class:`~pipelines.sagas.machine.SagaRun` decides, and the saga's one deadline
is kept as one processing-time timer (moved when the deadline moves). Processing time is the operator's
(``ctx.processing_time_ms``, which the stage advances before each batch and at each watermark tick); before the
first tick, a row's own ``_timestamp`` stands in. Rows of other types are neither starts nor replies to what the
saga waits for: they change nothing (a participant's duplicate reply, a reply to an older attempt); nor do rows
without a saga id.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipelines.config.saga import SagaConfig
from pipelines.sagas.contract import saga_output_schema
from pipelines.sagas.definition import Saga, load_saga
from pipelines.sagas.machine import SagaRun, Topics
from pipelines.state.process_function import Key, ProcessContext, TimeDomain
from pipelines.state.process_output import Output

__all__ = ["SagaProcess"]


class SagaProcess:
    """The saga ``saga`` (by default the one ``config.saga`` names) run with ``config``'s columns and topics; a
    :class:`~pipelines.state.process_function.ProcessFunction`."""

    def __init__(self, config: SagaConfig, saga: Saga | None = None) -> None:
        self._config = config
        self._saga = saga if saga is not None else load_saga(config.saga, config.options)
        self._topics = Topics(config.events_topic, config.replies_topic, config.stuck_topic, dict(config.topics))
        self.output_schema: pa.Schema = saga_output_schema(config.key)
        self._own_columns = {config.key, config.type_column, config.command_id_column, config.reason_column}

    @property
    def saga(self) -> Saga:
        return self._saga

    def process(self, key: Key, rows: pa.Table, ctx: ProcessContext) -> Output:
        if key is None:
            return None  # no saga id: neither a start nor a reply of any saga
        config = self._config
        run = self._run(key, ctx, None)
        for row in rows.to_pylist():
            run.at(_now(ctx, row))
            answered = row.get(config.command_id_column)
            message_type = row.get(config.type_column)
            if answered is None and message_type == self._saga.start:
                data = {
                    name: value
                    for name, value in row.items()
                    if value is not None and not name.startswith("_") and name not in self._own_columns
                }
                run.start(data, row.get("_traceparent"))
            elif answered is not None and message_type is not None:
                merged = {name: row[name] for name in config.reply_columns if row.get(name) is not None}
                run.reply(str(message_type), str(answered), row.get(config.reason_column), merged)
        return self._store(run, ctx)

    def on_timer(self, key: Key, timer_ms: int, domain: TimeDomain, ctx: ProcessContext) -> Output:
        run = self._run(key, ctx, ctx.processing_time_ms if ctx.processing_time_ms is not None else timer_ms)
        run.deadline_reached(timer_ms)
        return self._store(run, ctx)

    def _run(self, key: Key, ctx: ProcessContext, now_ms: int | None) -> SagaRun:
        state: dict[str, Any] | None = ctx.state.get()
        return SagaRun(self._saga, self._topics, self._config.key, str(key), state, now_ms or 0)

    def _store(self, run: SagaRun, ctx: ProcessContext) -> Output:
        before = run.waited_for
        after = run.deadline
        if before != after:
            if before is not None:
                ctx.timers.delete_processing_time_timer(before.time_ms)
            if after is not None:
                ctx.timers.register_processing_time_timer(after.time_ms)
        if run.state is None:
            ctx.state.clear()
        else:
            ctx.state.set(run.state)
        return run.rows or None


def _now(ctx: ProcessContext, row: dict[str, Any]) -> int:
    if ctx.processing_time_ms is not None:
        return ctx.processing_time_ms
    stamp = row.get("_timestamp")
    return int(stamp) if stamp is not None else 0
