"""The schemas' own example events, through real feeders (schema validation on)
into one timeline of three sources: the expected timelines come out, and the one
example without a usable time is dead-lettered with its reason."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pulsar
from runtime_helpers import produce, spawn

from timeline.store import open_store

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "tests" / "sources" / "wikimedia" / "examples"
T_PAGE = 1_609_459_200_000                # 2021-01-01T00:00:00Z: every page example's meta.dt
T_REV = (1_591_815_436_000, 1_591_815_724_000)  # 2020-06-10T18:57:16Z, 19:02:04Z


def _examples(prefix: str) -> list[bytes]:
    return [p.read_bytes() for p in sorted(EXAMPLES.glob(f"{prefix}__*.json"))]


def test_schema_examples_through_the_feeder(temporal_server, pulsar_server, tmp_path, wait_for):
    tag = uuid.uuid4().hex[:6]
    topics = {name: f"ex-{tag}-{name}" for name in ("change", "prediction", "revision")}
    name = f"examples-{tag}"
    store_url = f"sqlite:///{tmp_path / 'results.db'}"
    ep = ["--temporal", temporal_server.address, "--pulsar", pulsar_server.address, "--store", store_url]
    expr = ('has_existed(page_change_kind == "edit") '
            '&& latest_event_to_state(predicted_classification.model_name) == "example_model"')
    procs = [spawn("worker", ["worker", *ep], tmp_path / "logs")]
    client = pulsar.Client(pulsar_server.address, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
    try:
        reg = subprocess.run(
            [sys.executable, "-m", "timeline.cli.main", "register", name, expr,
             "--topic", topics["change"], "--key", "wiki_id,page.page_id", "--time", "meta.dt",
             "--schema", "mediawiki/page/change",
             "--source", topics["prediction"], "wiki_id,page.page_id", "meta.dt",
             "--source", topics["revision"], "database,page_id", "meta.dt", "--shards", "1", *ep],
            capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert reg.returncode == 0, reg.stderr
        dlq = client.subscribe(f"{topics['revision']}-dead-letter", "test",
                               initial_position=pulsar.InitialPosition.Earliest)
        for topic in topics.values():
            procs.append(spawn(f"feeder-{topic}", ["feeder", "--topic", topic, *ep], tmp_path / "logs"))
        produce(pulsar_server.address, topics["change"], _examples("mediawiki__page__change"))
        produce(pulsar_server.address, topics["prediction"], _examples("mediawiki__page__prediction_classification_change"))
        produce(pulsar_server.address, topics["revision"], _examples("mediawiki__revision__create"))

        msg = dlq.receive(timeout_millis=60_000)
        assert json.loads(msg.data())["database"] == "my_wiki"           # revision/create 2.0.0 example2:
        assert "no usable time at 'meta.dt'" in msg.properties()["reason"]  # its meta has "dt\"", not "dt"

        store = open_store(store_url)

        def results():  # both sources' events have arrived (until then `true && unknown` is unknown)
            page, rev = store.result(name, "example:1"), store.result(name, "examplewiki:123")
            done = page and rev and page.timeline.values == [True] and rev.timeline.values == [False]
            return done and (page.timeline, rev.timeline)

        page, rev = wait_for(results, timeout=90, message="the examples' expected results")
        # At 2021-01-01 the page was edited and its prediction came from example_model: true from then on.
        assert (page.starts, page.values) == ([T_PAGE], [True])
        # The old revision-create stream has no page_change_kind or prediction: false && unknown = false.
        assert (rev.starts, rev.values) == ([T_REV[0]], [False])
        assert store.result(name, "my_wiki:23") is None
    finally:
        client.close()
        for p in procs:
            p.stop()
