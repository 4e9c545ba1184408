"""`eventray saga show|list` (cluster/commands/saga.py) on a pipeline whose saga rows went to a JSONL sink, run
in process; no Kafka: what is read from a Kafka record (cluster/commands/saga_io.py) is tested on records made
here."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
import yaml

from cluster.cli import main
from cluster.commands.saga_io import record_row
from tests.unit.test_saga_history import TRACE, TRACEPARENT, aborted, completed, row, stuck

Row = dict[str, Any]


def saga_config(tmp_path: Path, **changes: Any) -> Path:
    """A pipeline with a saga stage and a JSONL sink under ``tmp_path``; ``changes`` replace top-level fields."""
    data: dict[str, Any] = {
        "name": "order-saga",
        "source": {"type": "file", "paths": [str(tmp_path / "in-*.jsonl")]},
        "schema": {
            "fields": {"saga_id": "string", "message_type": "string", "command_id": "string", "issued_ms": "int64"},
            "required": ["saga_id", "message_type"],
            "event_time_field": "issued_ms",
        },
        "keyed": {"type": "saga", "saga": "shop.sagas:order_saga"},
        "sinks": [{"type": "jsonl", "path": str(tmp_path / "results")}],
        "dead_letter": {"type": "jsonl", "path": str(tmp_path / "dead")},
        "delivery": "exactly_once",  # a saga stage needs it
        "checkpoint": {"uri": str(tmp_path / "checkpoints")},
        **changes,
    }
    path = tmp_path / "saga.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def write_results(tmp_path: Path, *parts: list[Row]) -> None:
    """Each part as one actor's JSONL file, as the sink writes them."""
    folder = tmp_path / "results"
    folder.mkdir(exist_ok=True)
    for index, rows in enumerate(parts):
        lines = [msgspec.json.encode(r) for r in rows]
        (folder / f"part-{index}.jsonl").write_bytes(b"\n".join(lines) + b"\n")


@pytest.fixture
def stored(tmp_path: Path) -> Path:
    """Three sagas (aborted, completed, stuck), one redelivered and out of order, with the commands and the
    dead-letter rows the stage wrote to the same sink."""
    delivered = aborted()
    redelivered = list(reversed(delivered[4:9]))
    dead_letter = row("s-3", 7, "SagaStuck", "stuck", kind="dead_letter", topic="saga-stuck")
    write_results(tmp_path, [*delivered, *completed()], [*redelivered, *stuck(), dead_letter])
    return saga_config(tmp_path)


def test_show_prints_one_saga_s_timeline(stored: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["saga", "show", str(stored), "s-1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "saga s-1 (order): aborted after 1.3 s"
    assert len([line for line in lines if line.startswith("  #")]) == 9  # redelivered rows once, commands not
    assert "  compensated  charge, reserve" in lines


def test_show_json(stored: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["saga", "show", str(stored), "s-3", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["status"] == "stuck" and answer["stuck_reason"] == "ship: no reply after 3 attempts"
    assert answer["trace_id"] == TRACE and [e["sequence"] for e in answer["events"]] == [1, 3, 5, 6]


def test_show_of_a_served_saga_says_why_its_state_now_was_not_asked_when_no_router_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_results(tmp_path, stuck())
    keyed = {"type": "saga", "saga": "shop.sagas:order_saga", "query": {"view": "sagas"}}
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    config = saga_config(tmp_path, keyed=keyed, serve={"port": port})
    assert main(["saga", "show", str(config), "s-3", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["status"] == "stuck" and answer["now"] is None
    assert answer["now_unanswered"].startswith(
        "no query router (is the pipeline running?) answers at http://127.0.0.1:"
    )
    assert main(["saga", "show", str(config), "s-3"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("now: not asked (no query router")


def test_show_of_an_unknown_saga_exits_1(stored: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["saga", "show", str(stored), "s-404"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err == f"eventray: no lifecycle events of saga 's-404' in the jsonl files in {stored.parent}/results\n"
    )


def test_list_prints_every_saga_newest_first(stored: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["saga", "list", str(stored)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["SAGA", "ID"]
    assert [line.split()[0] for line in lines[1:4]] == ["s-1", "s-2", "s-3"]  # all start at the same time
    assert lines[4].startswith("3 saga(s) of 3 in the jsonl files in")


def test_list_stuck_status_and_limit(stored: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["saga", "list", str(stored), "--stuck"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines[1:-1]] == ["s-3"]
    assert lines[-1].startswith("1 stuck saga(s) of 3")
    assert main(["saga", "list", str(stored), "--status", "running"]) == 0
    assert capsys.readouterr().out.startswith("no running saga(s) among 3 in the jsonl files")
    assert main(["saga", "list", str(stored), "--limit", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[-1].endswith("(the newest 1: --limit 0 shows all)")


def test_list_json(stored: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["saga", "list", str(stored), "--status", "completed", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert (answer["matching"], answer["total"]) == (1, 3)
    assert [(s["saga_id"], s["status"], s["last_step"]) for s in answer["sagas"]] == [("s-2", "completed", "ship")]
    assert "events" not in answer["sagas"][0]


def test_a_config_without_a_saga_stage_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = saga_config(tmp_path, keyed={"type": "dedup", "id_column": "saga_id", "ttl_ms": 60_000})
    assert main(["saga", "list", str(config)]) == 2
    error = capsys.readouterr().err
    assert "pipeline 'order-saga' has no saga stage" in error and "(keyed: {type: saga" in error


def test_a_sink_that_has_not_written_yet_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["saga", "show", str(saga_config(tmp_path)), "s-1"]) == 2
    error = capsys.readouterr().err
    assert "no sink holds the events topic 'saga-events'" in error and "has the pipeline run?" in error


def test_a_kafka_sink_not_writing_the_events_topic_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sink = {"type": "kafka", "topic": "orders-unrouted", "topic_column": "topic", "topics": ["payments"],
            "key_column": "saga_id"}  # fmt: skip
    config = saga_config(tmp_path, sinks=[sink], kafka={"bootstrap_servers": "127.0.0.1:1"})
    assert main(["saga", "list", str(config)]) == 2
    assert "topics: [saga-events, ...]" in capsys.readouterr().err


def test_several_saga_stages_need_stage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monitor = {"type": "saga_monitor", "key": "saga_id", "type_column": "message_type", "events_topic": "watch",
               "expect": [{"after": "SagaStarted", "then": ["Completed"], "within_ms": 1000}]}  # fmt: skip
    stages = [{"name": "orders", "keyed": {"type": "saga", "saga": "shop.sagas:order_saga"}},
              {"name": "watch", "inputs": ["orders"], "keyed": monitor}]  # fmt: skip
    config = saga_config(tmp_path, keyed=None, stages=stages)
    write_results(tmp_path, [*stuck(), row("s-3", 1, "SagaStuck", "stuck", topic="watch", saga="choreography")])
    assert main(["saga", "list", str(config)]) == 2
    assert "has 2 saga stages ['orders', 'watch']: pick one with --stage" in capsys.readouterr().err
    assert main(["saga", "show", str(config), "s-3", "--stage", "watch", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["saga"] == "choreography" and len(answer["events"]) == 1
    assert main(["saga", "list", str(config), "--stage", "nope"]) == 2
    assert "--stage 'nope': the saga stages of pipeline 'order-saga' are ['orders', 'watch']" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["list", "C", "--stuck", "--status", "running"],
        ["list", "C", "--limit", "-1"],
        ["list", "C", "--status", "x"],
        ["show", "C"],
    ],
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["saga", *argv])
    assert exited.value.code == 2 and "usage: eventray saga" in capsys.readouterr().err


def test_every_option_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("show", "list"):
        with pytest.raises(SystemExit):
            main(["saga", action, "--help"])
        printed = " ".join(capsys.readouterr().out.split())
        assert "--json print the result as JSON" in printed and "--stage NAME the saga stage" in printed
    assert "--limit N at most N sagas, newest start first (default 50; 0: all)" in printed
    assert "--stuck only parked sagas" in printed and "--status" in printed


def test_a_kafka_record_becomes_a_row_with_its_traceparent() -> None:
    value = {"saga_id": "s-1", "topic": "saga-events", "sequence": 1}
    record = SimpleNamespace(value=msgspec.json.encode(value), headers=[("traceparent", TRACEPARENT.encode())])
    assert record_row(record) == {**value, "_traceparent": TRACEPARENT}
    assert record_row(SimpleNamespace(value=b"not json", headers=[])) is None
    assert record_row(SimpleNamespace(value=b"[1, 2]", headers=[])) is None
    assert record_row(SimpleNamespace(value=None, headers=[])) is None
