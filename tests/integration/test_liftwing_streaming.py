"""A shipped LiftWing timeline streamed from two topics (edits, predictions):
the results equal the batch evaluator's on the same events."""

from __future__ import annotations

import datetime as dt
import random
import subprocess
import sys
import uuid
from pathlib import Path

import msgspec

from catalog import ARTICLE_COUNTRY, CATALOG, PAGE_CHANGE
from runtime_helpers import batch_timelines, produce, spawn
from store import open_store

ROOT = Path(__file__).resolve().parents[2]


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def lifecycle(pages: int, seed: int) -> list[dict]:
    """Edits and (mostly) their predictions, some lost, some late, as the streams carry them."""
    rng = random.Random(seed)
    events = []
    for page in range(pages):
        wiki = rng.choice(["enwiki", "frwiki"])
        t = 1_738_934_940_000 + rng.randrange(0, 600_000)
        for rev in range(rng.randrange(1, 5)):
            base = {"wiki_id": wiki, "page": {"page_id": page}, "revision": {"rev_id": page * 10 + rev}}
            events.append({**base, "meta": {"stream": PAGE_CHANGE, "dt": _iso(t)}, "page_change_kind": "edit"})
            if rng.random() < 0.85:  # the rest are lost
                delay = rng.choice([rng.randrange(500, 5_000), rng.randrange(300_000, 900_000)])
                events.append({**base, "meta": {"stream": ARTICLE_COUNTRY, "dt": _iso(t + delay)},
                               "predicted_classification": {"predictions": rng.sample(["France", "Chile", "Kenya"],
                                                                                      rng.randrange(1, 3))}})
            t += rng.randrange(10_000, 400_000)
    return events


def test_prediction_wait_streams_equal_batch(temporal_server, pulsar_server, tmp_path, wait_for):
    prefix = f"t{uuid.uuid4().hex[:6]}."
    store_url = f"sqlite:///{tmp_path / 'results.db'}"
    ep = ["--temporal", temporal_server.address, "--pulsar", pulsar_server.address, "--store", store_url]
    definition = CATALOG["prediction-wait"]
    name = f"prediction-wait-{prefix[1:-1]}"
    procs = [spawn("worker", ["worker", *ep], tmp_path / "logs")]
    try:
        reg = subprocess.run([sys.executable, "-m", "cli.main", "register", name, "--builtin", "prediction-wait",
                              "--topic-prefix", prefix, "--shards", "2", *ep], capture_output=True, text=True,
                             cwd=ROOT, timeout=60)
        assert reg.returncode == 0, reg.stderr
        assert f"{prefix}{PAGE_CHANGE}" in reg.stdout and f"{prefix}{ARTICLE_COUNTRY}" in reg.stdout
        for stream in (PAGE_CHANGE, ARTICLE_COUNTRY):
            procs.append(spawn(f"feeder-{stream}", ["feeder", "--topic", f"{prefix}{stream}", *ep], tmp_path / "logs"))
        events = lifecycle(40, seed=2)
        for stream in (PAGE_CHANGE, ARTICLE_COUNTRY):
            produce(pulsar_server.address, f"{prefix}{stream}",
                    [msgspec.json.encode(e) for e in events if e["meta"]["stream"] == stream])
        normalised = [{**e, "k": f"{e['wiki_id']}:{e['page']['page_id']}"} for e in events]
        expected = batch_timelines(definition.expression, normalised, "k", "meta.dt")
        store = open_store(store_url)

        def converged():
            return all((r := store.result(name, k)) is not None and r.timeline == tl for k, tl in expected.items())

        try:
            wait_for(converged, timeout=120, interval=0.5, message="prediction-wait results equal to batch")
        except AssertionError:
            raise AssertionError("\n".join(f"--- {p.name}\n{p.tail()}" for p in procs))
    finally:
        for p in procs:
            p.stop()
