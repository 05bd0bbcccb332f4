"""Lifecycle per revision (issue 13, item 4), hand-checked: the per-revision
timelines (key wiki_id:rev_id) and the per-page ones that compare the revision
of the latest edit with the revision of the latest prediction. Events are the
schemas' own examples (through test_liftwing_timelines' edit/prediction) and
the production events recorded in tests/fixtures/eventstreams_page_change.sse."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from test_liftwing_timelines import LIFECYCLE, edit, evaluate, prediction

from timeline.catalog import CATALOG, PAGE_CHANGE, REVISION_KEY
from timeline.dsl.events import parse_time
from timeline.sources.sse import parse_sse

RECORDED = Path(__file__).resolve().parents[1] / "fixtures" / "eventstreams_page_change.sse"


def delete(at_s: float, rev: int) -> dict:
    e = edit(at_s, rev)
    e["page_change_kind"] = "delete"
    return e


# The issue's reproduction: edit r101 at T0, edit r102 at T0+1 s, a prediction for r101 at T0+1.5 s.
LATE_OLD_PREDICTION = [edit(0, 101), edit(1, 102), prediction(1.5, 101, ["France"])]


def test_the_issue_reproduction_the_page_still_waits():
    # the page-level timeline of "any prediction" stops at 1,500 ms (the reported problem) ...
    assert evaluate("prediction-wait", LATE_OLD_PREDICTION, 10) == {"enwiki:7": 1500}
    # ... the per-revision-aware one keeps growing: r102 has no answer yet
    assert evaluate("page-revision-wait", LATE_OLD_PREDICTION, 10) == {"enwiki:7": 10_000}
    assert evaluate("page-revision-wait", LATE_OLD_PREDICTION, 20) == {"enwiki:7": 20_000}
    # per revision: r101 waited 1.5 s and is answered; r102 waits from 1 s on
    assert evaluate("revision-wait", LATE_OLD_PREDICTION, 10) == {"enwiki:101": 1500, "enwiki:102": 9000}
    # r102's own prediction at 30 s ends both
    answered = LATE_OLD_PREDICTION + [prediction(30, 102, ["France"])]
    assert evaluate("page-revision-wait", answered, 60) == {"enwiki:7": 30_000}
    assert evaluate("revision-wait", answered, 60) == {"enwiki:101": 1500, "enwiki:102": 29_000}


def test_page_slo_breach_follows_the_latest_edited_revision():
    events = LATE_OLD_PREDICTION
    assert evaluate("page-slo-breach", events, 301) == {"enwiki:7": False}        # r102 edited 300 s ago
    assert evaluate("page-slo-breach", events, 301.001) == {"enwiki:7": True}    # more than 5 minutes
    assert evaluate("prediction-slo-breach", events, 400) == {"enwiki:7": False}  # blind: "answered" at 1.5 s
    late = events + [prediction(400, 102, ["France"])]
    assert evaluate("page-slo-breach", late, 400) == {"enwiki:7": False}
    assert evaluate("revision-slo-breach", events, 400) == {"enwiki:101": False, "enwiki:102": True}
    assert evaluate("revision-slo-breach", late, 400) == {"enwiki:101": False, "enwiki:102": False}


def test_revision_timelines_on_the_lifecycle_scenario():
    # r1 answered after 3 s; r2's prediction is lost; r3 answered after 20 s, then a duplicate a day later
    assert evaluate("revision-wait", LIFECYCLE, 600) == {"enwiki:1": 3000, "enwiki:2": 500_000, "enwiki:3": 20_000}
    assert evaluate("revision-slo-breach", LIFECYCLE, 399.999) == {
        "enwiki:1": False, "enwiki:2": False, "enwiki:3": None}  # r3 not edited yet: unknown
    assert evaluate("revision-slo-breach", LIFECYCLE, 400.001) == {
        "enwiki:1": False, "enwiki:2": True, "enwiki:3": None}
    assert evaluate("revision-slo-breach", LIFECYCLE, 90_001)["enwiki:3"] is False  # the duplicate changes nothing
    # per page: the same waits as prediction-wait here (r3 supersedes the lost r2)
    assert evaluate("page-revision-wait", LIFECYCLE, 600) == {"enwiki:7": 3000 + 420_000}
    assert evaluate("page-slo-breach", LIFECYCLE, 400.001) == {"enwiki:7": True}   # r2 edited at 100 s
    assert evaluate("page-slo-breach", LIFECYCLE, 519.999) == {"enwiki:7": False}  # r3 edited at 500 s: 20 s
    assert evaluate("page-slo-breach", LIFECYCLE, 90_001) == {"enwiki:7": False}


def test_a_deleted_page_stops_waiting():
    events = [edit(0, 1), delete(10, 1)]
    assert evaluate("revision-wait", events, 100) == {"enwiki:1": 10_000}
    assert evaluate("page-revision-wait", events, 100) == {"enwiki:7": 10_000}
    assert evaluate("page-slo-breach", events, 1000) == {"enwiki:7": False}


def test_a_prediction_for_an_older_revision_after_the_newer_one_is_answered():
    """Known limit of the per-page form (README): it compares with the *latest* prediction, so a
    late prediction for an older revision that comes after the newer one's makes the page wait
    again. The per-revision timelines are exact."""
    events = [edit(0, 101), edit(1, 102), prediction(2, 102, ["France"]), prediction(5, 101, ["France"])]
    assert evaluate("revision-wait", events, 100) == {"enwiki:101": 5000, "enwiki:102": 1000}
    assert evaluate("page-revision-wait", events, 100) == {"enwiki:7": 2000 + 95_000}


def test_edits_the_model_does_not_answer_do_not_wait_per_revision():
    talk = edit(0, 11)
    talk["page"]["namespace_id"] = 1
    commons = edit(0, 12)
    commons["wiki_id"], commons["page"]["page_id"] = "commonswiki", 8
    assert evaluate("revision-wait", [talk, commons], 600) == {"enwiki:11": 0, "commonswiki:12": 0}
    assert evaluate("page-revision-wait", [talk, commons], 600) == {"enwiki:7": 0, "commonswiki:8": 0}
    assert evaluate("page-slo-breach", [talk, commons], 600) == {"enwiki:7": False, "commonswiki:8": False}


def _recorded_edits() -> list[dict]:
    """The production page_change events of the recording (not the schema examples, not canaries:
    the feeder drops canaries)."""
    out = []
    for sse in parse_sse([RECORDED.read_bytes()]):
        event = json.loads(sse.data)
        meta = event.get("meta", {})
        if meta.get("stream") == PAGE_CHANGE and meta.get("domain", "").endswith(".org"):
            out.append(event)
    return out


def test_recorded_production_edits():
    events = _recorded_edits()
    # enwiki page 70793851 revision 1319367938, delivered twice (11:05:04.238793 and 11:07:00); a wikidata item edit
    assert [(e["wiki_id"], e["revision"]["rev_id"], e["meta"]["dt"]) for e in events] == [
        ("wikidatawiki", 2509134105, "2026-06-22T09:48:11.082Z"),
        ("enwiki", 1319367938, "2025-10-29T11:05:04.238793Z"),
        ("enwiki", 1319367938, "2025-10-29T11:07:00.000Z")]
    edited = parse_time("2025-10-29T11:05:04.238793Z")  # 11:05:04.239
    # the enwiki revision waits from its first delivery; the second delivery of the same revision
    # neither restarts nor ends the wait
    assert evaluate_at("revision-wait", events, edited + 180_000)["enwiki:1319367938"] == 180_000
    assert evaluate_at("page-revision-wait", events, edited + 180_000)["enwiki:70793851"] == 180_000
    assert evaluate_at("page-slo-breach", events, edited + 300_000)["enwiki:70793851"] is False
    assert evaluate_at("page-slo-breach", events, edited + 300_001)["enwiki:70793851"] is True
    assert evaluate_at("revision-slo-breach", events, edited + 300_001)["enwiki:1319367938"] is True
    # the wikidata item is not answered by the model: it never waits
    item_edited = parse_time("2026-06-22T09:48:11.082Z")
    assert evaluate_at("revision-wait", events, item_edited + 600_000)["wikidatawiki:2509134105"] == 0
    assert evaluate_at("page-slo-breach", events, item_edited + 600_000)["wikidatawiki:60683518"] is False
    # its prediction (the schema's example event, for this page and revision) ends the wait at 11:08:04.239
    answer = prediction(0, 1319367938, ["United States"])
    answer["page"]["page_id"] = 70793851
    answer["meta"]["dt"] = "2025-10-29T11:08:04.239Z"
    assert evaluate_at("revision-wait", events + [answer], edited + 600_000)["enwiki:1319367938"] == 180_000
    assert evaluate_at("page-revision-wait", events + [answer], edited + 600_000)["enwiki:70793851"] == 180_000
    assert evaluate_at("page-slo-breach", events + [answer], edited + 600_000)["enwiki:70793851"] is False


def evaluate_at(name: str, events: list[dict], at_ms: int):
    return evaluate(name, events, 0, at_ms=at_ms)


def test_revision_timelines_are_keyed_by_revision():
    for name in ("revision-wait", "revision-slo-breach"):
        assert {key for _, key, _, _ in CATALOG[name].sources} == {REVISION_KEY}
    assert copy.deepcopy(CATALOG["page-slo-breach"]).sources[0][1] == "wiki_id,page.page_id"
