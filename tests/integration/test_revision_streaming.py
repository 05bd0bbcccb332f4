"""The per-revision lifecycle timelines (issue 13, item 4) in the durable runtime: one
keyed by revision, two per page that compare two timelines (the revision of the latest
edit != the revision of the latest prediction), streamed from the edit and prediction
streams of the lifecycle simulation plus the issue's reproduction; the stored results
equal the batch evaluator's."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import uuid
from pathlib import Path

import msgspec
from runtime_helpers import batch_timelines, produce, spawn, wait_equal

from timeline.catalog import ARTICLE_COUNTRY, CATALOG, PAGE_CHANGE
from timeline.dsl.events import parse_time
from timeline.producers.liftwing import simulate_lifecycle
from timeline.store import open_store

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("revision-wait", "page-revision-wait", "page-slo-breach")


EXAMPLES = ROOT / "tests" / "sources" / "wikimedia" / "examples"


def _reproduction(start_ms: int) -> list[dict]:
    """Edit r101, edit r102 a second later, a prediction for r101 half a second after that:
    the schemas' example events (so the feeders' validation accepts them) for one page."""
    templates = {PAGE_CHANGE: "mediawiki__page__change__1.2.0__example0.json",
                 ARTICLE_COUNTRY: "mediawiki__page__prediction_classification_change__1.1.0__example0.json"}

    def event(stream: str, at_ms: int, rev: int) -> dict:
        e = json.loads((EXAMPLES / templates[stream]).read_text())
        when = dt.datetime.fromtimestamp(at_ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds")
        e["wiki_id"], e["page"]["page_id"], e["revision"]["rev_id"] = "enwiki", 424242, rev
        e["page"].update(namespace_id=0, is_redirect=False)
        e["meta"].update(stream=stream, dt=when.replace("+00:00", "Z"))
        return e

    return [event(PAGE_CHANGE, start_ms, 101), event(PAGE_CHANGE, start_ms + 1000, 102),
            event(ARTICLE_COUNTRY, start_ms + 1500, 101)]


def test_revision_lifecycle_streams_equal_batch(temporal_server, pulsar_server, tmp_path, wait_for):
    prefix = f"r{uuid.uuid4().hex[:6]}."
    store_url = f"sqlite:///{tmp_path / 'results.db'}"
    ep = ["--temporal", temporal_server.address, "--pulsar", pulsar_server.address, "--store", store_url]
    procs = [spawn("worker", ["worker", *ep], tmp_path / "logs")]
    try:
        for builtin in NAMES:
            reg = subprocess.run([sys.executable, "-m", "timeline.cli.main", "register", f"{builtin}-{prefix[1:-1]}",
                                  "--builtin", builtin, "--topic-prefix", prefix, "--shards", "2", *ep],
                                 capture_output=True, text=True, cwd=ROOT, timeout=120)
            assert reg.returncode == 0, reg.stderr
        for stream in (PAGE_CHANGE, ARTICLE_COUNTRY):
            procs.append(spawn(f"feeder-{stream}", ["feeder", "--topic", f"{prefix}{stream}", *ep], tmp_path / "logs"))

        simulated = [e.event for e in simulate_lifecycle(30, seed=5) if e.stream in (PAGE_CHANGE, ARTICLE_COUNTRY)
                     and e.bug is None]
        events = simulated + _reproduction(min(parse_time(e["meta"]["dt"]) for e in simulated))
        for stream in (PAGE_CHANGE, ARTICLE_COUNTRY):
            produce(pulsar_server.address, f"{prefix}{stream}",
                    [msgspec.json.encode(e) for e in events if e["meta"]["stream"] == stream])

        store = open_store(store_url)
        for builtin in NAMES:
            definition = CATALOG[builtin]
            _, key, time, _ = definition.sources[0]
            expected = batch_timelines(definition.expression, events, key, time)
            assert expected, builtin
            wait_equal(wait_for, store, f"{builtin}-{prefix[1:-1]}", expected, procs, 240,
                       f"{builtin} results equal to batch")
        # the reproduction's page is still waiting at the end: one span from its first edit, growing
        repro = store.result(f"page-revision-wait-{prefix[1:-1]}", "enwiki:424242").timeline
        assert repro.values == [0] and repro.slopes == [1.0], repro
    finally:
        for p in procs:
            p.stop()
