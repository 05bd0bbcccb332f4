"""Prometheus metrics and JSON logs of real feeder and worker processes, and the feeder's
dead-letter log: one line per message (not one per timeline), repeats rate-limited."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from runtime_helpers import produce, spawn

from timeline.runtime.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
BAD_KEY_MESSAGES = 20


def samples(url: str) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(url, timeout=10).text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_feeder_and_worker_metrics_and_one_dead_letter_line_per_message(temporal_server, pulsar_server, tmp_path,
                                                                        wait_for):
    topic = f"metrics-{uuid.uuid4().hex[:6]}"
    ep = ["--temporal", temporal_server.address, "--pulsar", pulsar_server.address,
          "--store", f"sqlite:///{tmp_path / 'results.db'}"]
    names = [f"m-a-{uuid.uuid4().hex[:4]}", f"m-b-{uuid.uuid4().hex[:4]}"]
    for name in names:  # two timelines on the topic: a bad message concerns both
        subprocess.run([sys.executable, "-m", "timeline.cli.main", "register", name,
                        'has_existed(state == "on")', "--topic", topic, "--key", "id", "--time", "ts",
                        "--shards", "1", *ep], check=True, cwd=ROOT, capture_output=True, timeout=180)
    feeder_port, sdk_port = free_port(), free_port()
    procs = [spawn("m-worker", ["worker", "--temporal-metrics-port", str(sdk_port), "--log-format", "json", *ep],
                   tmp_path / "logs"),
             spawn("m-feeder", ["feeder", "--topic", topic, "--linger-ms", "50", "--metrics-port", str(feeder_port),
                                "--log-format", "json", *ep], tmp_path / "logs")]
    feeder_metrics = f"http://127.0.0.1:{feeder_port}/metrics"
    try:
        good = [json.dumps({"id": f"k{i}", "ts": 1000 + i, "state": "on"}).encode() for i in range(3)]
        bad = [b"not json"] + [json.dumps({"ts": 5, "state": "on"}).encode()] * BAD_KEY_MESSAGES
        produce(pulsar_server.address, topic, good + bad)

        def fed() -> dict:
            found = samples(feeder_metrics)
            done = (value(found, "timeline_feeder_dead_lettered_total", topic=topic) >= 1 + BAD_KEY_MESSAGES
                    and all(value(found, "timeline_feeder_events_total", topic=topic, timeline=n) >= 3
                            for n in names))
            return found if done else {}

        found = wait_for(fed, timeout=180, message=f"the feeder's counters (log: {procs[1].log})")
        assert value(found, "timeline_feeder_messages_total", topic=topic) >= len(good) + len(bad)
        assert all(value(found, "timeline_feeder_signals_total", topic=topic, timeline=n) >= 1 for n in names)
        assert value(found, "timeline_feeder_batch_messages_count", topic=topic) >= 1
        assert ("timeline_feeder_lag_seconds", frozenset({"topic": topic}.items())) in found

        # The worker's Temporal SDK metrics: workflow task latency among them.
        sdk = wait_for(lambda: "temporal_workflow_task_execution_latency" in
                       httpx.get(f"http://127.0.0.1:{sdk_port}/metrics", timeout=10).text,
                       timeout=120, message="the Temporal SDK's metrics on the worker")
        assert sdk
    finally:
        for p in procs:
            p.stop()

    records = [json.loads(line) for line in procs[1].log.read_text().splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    dead = [r["message"] for r in records if r["message"].startswith("dead-lettered message")]
    no_key = [m for m in dead if "no key at 'id'" in m]
    not_json = [m for m in dead if "not valid JSON" in m]
    assert len(not_json) == 1, dead
    # 20 messages without a key, each rejected by both timelines: a handful of lines at most, each for
    # one message naming both timelines (not one line per timeline, not one per message).
    assert 1 <= len(no_key) <= 3, dead
    assert all(names[0] in m and names[1] in m for m in no_key), no_key
