"""The order saga on a real broker and a real Ray cluster: configs/order-saga.yaml orchestrates inventory,
payments and shipping (their configs, each its own pipeline), whose participants fail, or stay silent, with
fixed probabilities decided per command id. Every saga ends all done or all undone in reverse order, exactly as
an independent sequential simulator (pipelines/verify/saga_check.py) decides from the same participant
decisions; no side effect is applied twice; a duplicate order starts no second saga; every saga is one trace
(the order's) across the participants and Kafka hops; ``eventray saga show|list`` tell the story from the events
topic, and ``show`` asks the saga's owner for its state now through the query router."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cluster.examples.order_saga import COMMAND_TOPICS, Pipelines, saga_run
from pipelines.config.query import QueryConfig, ServeConfig
from tests.integration.pipelines_under_test import unique
from tests.integration.ray_cluster import LocalRayCluster, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.ray, pytest.mark.slow]

ORDERS = 300
# seed 11: the simulator ends these 300 sagas 253 completed, 43 aborted, 4 stuck (compensations failing 5 times)
OPTIONS: dict[str, Any] = {"failure_rate": 0.1, "silent_rate": 0.04, "compensation_failure_rate": 0.6, "seed": 11}
TIMEOUT_MS = 6_000  # a silent participant costs this much; nothing is killed here, so a timeout is a silence
REPO = Path(__file__).resolve().parents[2]


def test_order_sagas_end_as_a_sequential_simulator_decides_with_no_side_effect_twice(
    ray_driver: LocalRayCluster, kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = saga_run(unique("saga"), kafka_bootstrap, tmp_path, ORDERS, OPTIONS, TIMEOUT_MS)
    served = run.configs["order-saga"]  # its sagas' state served as a view (CQRS): `saga show` asks the owner
    assert served.keyed is not None
    keyed = served.keyed.model_copy(update={"query": QueryConfig(view="sagas")})
    run.configs["order-saga"] = served.model_copy(update={"keyed": keyed, "serve": ServeConfig(port=free_port())})
    config_file = tmp_path / "order-saga.yaml"
    config_file.write_text(run.configs["order-saga"].to_yaml())
    with Pipelines(list(run.configs.values()), ray_driver.address):
        run.place_orders()
        events = run.wait_until_every_saga_ended(patient_s=300)
        stuck_now = json.loads(_cli("list", str(config_file), "--stuck", "--json"))["sagas"]
        asked = {story["saga_id"]: json.loads(_cli("show", str(config_file), story["saga_id"], "--json"))
                 for story in stuck_now[:2]}  # fmt: skip

    report = run.check(events)
    assert report.ok, report.failures()
    assert report.sagas == len(run.saga_ids) < len(run.starts)  # the duplicate orders started nothing
    assert min(report.by_status.get(status, 0) for status in ("completed", "aborted", "stuck")) > 0, report.by_status
    assert report.lateness.timeouts > 0  # some participant stayed silent, and its step timed out

    commands = [row for name in COMMAND_TOPICS for row in run.rows(name)]
    traces: dict[str, set[str | None]] = {}
    for row in [*events, *commands, *run.rows("order-saga-replies")]:
        traces.setdefault(row["saga_id"], set()).add(row["_traceparent"] and row["_traceparent"][3:35])
    split = {saga: ids for saga, ids in traces.items() if len(ids) != 1 or None in ids}
    assert not split, f"{len(split)} saga(s) not one trace, e.g. {list(split.items())[:3]}"

    assert asked and all(
        shown["now"]["status"] == shown["status"] == "stuck" and shown["now"]["step_name"] == shown["last_step"]
        for shown in asked.values()
    ), asked  # the owner's state agrees with the events topic
    a_saga = sorted(run.saga_ids)[0]
    shown = json.loads(_cli("show", str(config_file), a_saga, "--json"))
    assert shown["saga_id"] == a_saga and shown["status"] in ("completed", "aborted", "stuck")
    assert [event["sequence"] for event in shown["events"]] == sorted(event["sequence"] for event in shown["events"])
    assert (
        shown["events"][0]["message_type"] == "SagaStarted"
        and shown["trace_id"] == shown["events"][0]["_traceparent"][3:35]
    )
    listed = json.loads(_cli("list", str(config_file), "--limit", "0", "--json"))
    assert listed["total"] == listed["matching"] == len(run.saga_ids)
    stuck = json.loads(_cli("list", str(config_file), "--stuck", "--json"))
    assert stuck["matching"] == report.by_status["stuck"]
    assert all(story["stuck_reason"].startswith("the compensation of") for story in stuck["sagas"])
    parked = run.rows("order-saga-stuck")  # the dead-letter record of each parked saga
    assert sorted(row["saga_id"] for row in parked) == sorted(story["saga_id"] for story in stuck["sagas"])


def _cli(*args: str) -> str:
    command = [sys.executable, "-m", "cluster.cli", "saga", *args]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
