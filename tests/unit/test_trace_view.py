"""`eventray trace`: spans of one trace read back from JSONL files and drawn as a tree by parent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from cluster.cli import main
from cluster.commands.trace_view import load_trace, trace_tree
from pipelines.errors import ConfigError

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def span(span_id: str, parent: str | None, name: str, pid: int, start: int, trace: str = TRACE) -> dict[str, object]:
    return {
        "trace_id": trace, "span_id": span_id, "parent_span_id": parent, "name": name, "kind": "CONSUMER",
        "start_ns": start, "end_ns": start + 2_000_000,
        "attributes": {"eventray.pipeline": "orders", "eventray.stage": "source", "messaging.batch.message_count": 7},
        "links": [], "resource": {"eventray.actor": f"actor-{pid}", "process.pid": pid},
    }  # fmt: skip


def write(folder: Path, pid: int, spans: list[dict[str, object]]) -> None:
    (folder / f"spans-{pid}.jsonl").write_text("".join(json.dumps(s) + "\n" for s in spans))


def test_spans_of_one_trace_from_every_process_become_a_tree(tmp_path: Path) -> None:
    write(
        tmp_path, 1, [span("a" * 16, "f" * 16, "process orders", 1, 10), span("9" * 16, None, "other", 1, 5, "1" * 32)]
    )
    write(tmp_path, 2, [span("b" * 16, "a" * 16, "aggregate orders", 2, 20)])

    spans = load_trace(tmp_path, TRACE.upper())

    assert [s.name for s in spans] == ["process orders", "aggregate orders"]
    console = Console(record=True, width=200)
    console.print(trace_tree(TRACE, spans))
    text = console.export_text()
    assert "2 spans in 2 processes" in text
    lines = text.splitlines()
    parent_line = next(i for i, line in enumerate(lines) if "process orders" in line)
    child_line = next(i for i, line in enumerate(lines) if "aggregate orders" in line)
    assert child_line > parent_line
    indent = len(lines[child_line]) - len(lines[child_line].lstrip("│ └├─"))
    assert indent > len(lines[parent_line]) - len(lines[parent_line].lstrip("│ └├─"))


def test_no_span_files_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"tracing\.enabled"):
        load_trace(tmp_path, TRACE)


def test_the_cli_says_when_a_trace_was_not_sampled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, 1, [span("a" * 16, None, "process orders", 1, 10, "2" * 32)])

    assert main(["trace", TRACE, "--dir", str(tmp_path)]) == 1
    assert "was it sampled" in capsys.readouterr().err
