"""The shipped LiftWing lifecycle timelines on a hand-checked scenario, built
from the schemas' own example events (batch evaluator; the streaming runtime
is checked against the batch evaluator in tests/integration)."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import msgspec

from timeline.catalog import ARTICLE_COUNTRY, CATALOG, PAGE_CHANGE
from timeline.dsl.batch import run_eval
from timeline.dsl.compiler import compile_expression
from timeline.dsl.decode import decode_jsonl
from timeline.dsl.events import split_key_paths, split_path

EXAMPLES = Path(__file__).resolve().parents[1] / "sources" / "wikimedia" / "examples"  # the project's copy
T0 = 1_738_934_940_000  # 2025-02-07T13:29:00Z


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _template(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text())


def edit(at_s: float, rev: int) -> dict:
    e = copy.deepcopy(_template("mediawiki__page__change__1.2.0__example0.json"))
    e["wiki_id"], e["page"]["page_id"], e["revision"]["rev_id"] = "enwiki", 7, rev
    e["page"].update(namespace_id=0, is_redirect=False)  # an article: the model answers its edits
    e["meta"].update(stream=PAGE_CHANGE, dt=_iso(T0 + int(at_s * 1000)))
    return e


def prediction(at_s: float, rev: int, classes: list[str]) -> dict:
    e = copy.deepcopy(_template("mediawiki__page__prediction_classification_change__1.1.0__example0.json"))
    e["wiki_id"], e["page"]["page_id"], e["revision"]["rev_id"] = "enwiki", 7, rev
    e["page"].update(namespace_id=0, is_redirect=False)
    e["predicted_classification"]["predictions"] = classes
    e["meta"].update(stream=ARTICLE_COUNTRY, dt=_iso(T0 + int(at_s * 1000)))
    return e


# One page: an edit answered after 3 s, an edit whose prediction is lost, an
# edit answered after 20 s with new classes, then a duplicate (a retry) a day later.
LIFECYCLE = [edit(0, 1), prediction(3, 1, ["France"]), edit(100, 2), edit(500, 3),
             prediction(520, 3, ["France", "Germany"]), prediction(90_000, 3, ["France", "Germany"])]


def evaluate(name: str, events: list[dict], at_s: float, at_ms: int | None = None):
    d = CATALOG[name]
    topics = {t for t, _, _, _ in d.sources}
    mine = [e for e in events if e["meta"]["stream"] in topics]  # what the feeders of its sources deliver
    _, key, time, _ = d.sources[0]
    plan = compile_expression(d.expression)
    data = b"\n".join(msgspec.json.encode(e) for e in mine)
    decoded = decode_jsonl(data, split_key_paths(key), split_path(time), plan.columns())
    assert not decoded.bad
    return msgspec.json.decode(msgspec.json.encode(run_eval(plan, decoded, at_ms if at_ms is not None else T0 + int(at_s * 1000), None, None)))


def test_prediction_wait_counts_the_time_edits_waited():
    assert evaluate("prediction-wait", LIFECYCLE, 2) == {"enwiki:7": 2000}
    assert evaluate("prediction-wait", LIFECYCLE, 50) == {"enwiki:7": 3000}
    # waiting again from 100 s (the lost prediction) until 520 s
    assert evaluate("prediction-wait", LIFECYCLE, 600) == {"enwiki:7": 3000 + 420_000}


def test_prediction_slo_breach_is_true_past_five_minutes_of_waiting():
    assert evaluate("prediction-slo-breach", LIFECYCLE, 2) == {"enwiki:7": False}
    assert evaluate("prediction-slo-breach", LIFECYCLE, 400) == {"enwiki:7": False}   # 300 s: not more than 5m
    assert evaluate("prediction-slo-breach", LIFECYCLE, 400.001) == {"enwiki:7": True}
    assert evaluate("prediction-slo-breach", LIFECYCLE, 519.999) == {"enwiki:7": True}
    assert evaluate("prediction-slo-breach", LIFECYCLE, 520) == {"enwiki:7": False}


def test_prediction_changed_within_24h():
    assert evaluate("prediction-changed-24h", LIFECYCLE, 1) == {"enwiki:7": None}  # before its first prediction
    assert evaluate("prediction-changed-24h", LIFECYCLE, 10) == {"enwiki:7": True}
    assert evaluate("prediction-changed-24h", LIFECYCLE, 520 + 86_399.999) == {"enwiki:7": True}
    # the retry a day later repeats the classes: no change, so 24 h after 520 s it turns false
    assert evaluate("prediction-changed-24h", LIFECYCLE, 520 + 86_400) == {"enwiki:7": False}


def test_time_with_prediction():
    assert evaluate("time-with-prediction", LIFECYCLE, 10) == {"enwiki:7": 7000}
    assert evaluate("time-with-prediction", LIFECYCLE, 90_000) == {"enwiki:7": (90_000 - 520) * 1000}


def test_every_shipped_definition_compiles_and_is_documented():
    for d in CATALOG.values():
        compile_expression(d.expression)
        assert d.title and d.answers and d.sources


def test_edits_the_model_does_not_answer_are_not_awaited():
    """A talk page (namespace 1) and a commons file get no prediction by design: never waiting."""
    talk = edit(0, 1)
    talk["page"]["namespace_id"] = 1
    commons = edit(0, 2)
    commons["wiki_id"], commons["page"]["page_id"] = "commonswiki", 8
    assert evaluate("prediction-wait", [talk, commons], 600) == {"enwiki:7": 0, "commonswiki:8": 0}
    assert evaluate("prediction-slo-breach", [talk, commons], 600) == {"enwiki:7": False, "commonswiki:8": False}
