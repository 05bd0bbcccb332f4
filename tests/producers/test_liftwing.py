"""The LiftWing lifecycle simulation (pure): every event it calls valid validates against its
schema, the ones it broke are exactly the ones EventGate rejects, predictions carry their edit,
arrival order is causal, and the outcome shares are as configured."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from datetime import datetime

import pytest

from timeline.cli.producer import SCENARIOS
from timeline.producers.liftwing import (
    ERROR_STREAM,
    LATE_AFTER_MS,
    MODEL_NAME,
    PAGE_CHANGE_SCHEMA,
    PAGE_CHANGE_STREAM,
    PREDICTION_SCHEMA,
    PREDICTION_STREAM,
    TAG_PREFIX,
    WEIGHTED_TAGS_SCHEMA,
    WEIGHTED_TAGS_STREAM,
    LifecycleEvent,
    liftwing_scenario,
    simulate_lifecycle,
)
from timeline.producers.pulsar_producer import TopicRecord
from timeline.sources.eventplatform import (
    STREAMS,
    EventGate,
    event_time_ms,
    page_key,
    validate,
)

START = 1_795_564_800_000  # 2026-11-25T00:00:00Z
STREAM_OF_KIND = {"page_change": PAGE_CHANGE_STREAM, "prediction": PREDICTION_STREAM,
                  "weighted_tags": WEIGHTED_TAGS_STREAM, "error": ERROR_STREAM}
# Where the validator's message points for each bug the simulation can introduce.
BUG_FIELD = {
    "revision.rev_dt dropped": "'rev_dt' is a required property",
    "page.page_id as a string": "$.page.page_id:",
    "performer dropped": "'performer' is a required property",
    "predicted_classification.model_version dropped": "'model_version' is a required property",
    "predicted_classification.predictions as a string": "$.predicted_classification.predictions:",
    "page.namespace_id dropped": "'namespace_id' is a required property",
    "wiki_id dropped": "'wiki_id' is a required property",
}


@pytest.fixture(scope="module")
def run():
    """Enough pages for every kind of event and every bug; a high invalid share on purpose."""
    return simulate_lifecycle(300, seed=11, start_ms=START, invalid_share=0.05)


@pytest.fixture(scope="module")
def outcomes():
    """High outcome shares and no invalid events, to count each outcome from the events."""
    return simulate_lifecycle(600, seed=5, start_ms=START, invalid_share=0.0, lost_share=0.1, failed_share=0.1,
                              late_share=0.15, duplicate_share=0.1, no_country_share=0.0)


def _of(events, kind: str) -> list[LifecycleEvent]:
    return [e for e in events if e.kind == kind]


def _edits_by_rev(events) -> dict[tuple[str, int], LifecycleEvent]:
    """(wiki_id, rev_id) -> the page_change event that created that revision (deletes create none)."""
    out = {}
    for e in _of(events, "page_change"):
        if e.event["page_change_kind"] != "delete":
            rev = (e.event["wiki_id"], e.event["revision"]["rev_id"])
            assert rev not in out, f"two page changes created revision {rev}"
            out[rev] = e
    return out


def _without_slots(revision: dict) -> dict:
    return {k: v for k, v in revision.items() if k != "content_slots"}


# --- determinism --------------------------------------------------------------------------------


def test_deterministic_by_seed():
    a = simulate_lifecycle(40, seed=3, start_ms=START)
    b = simulate_lifecycle(40, seed=3, start_ms=START, invalid_share=0.01)
    c = simulate_lifecycle(40, seed=4, start_ms=START)
    assert list(a) == list(b) and a.summary == b.summary
    assert [e.event for e in a] != [e.event for e in c]
    # the start only shifts the times
    later = simulate_lifecycle(40, seed=3, start_ms=START + 86_400_000)
    assert [e.arrival_ms + 86_400_000 for e in a] == [e.arrival_ms for e in later]
    assert [e.event["meta"]["id"] for e in a] == [e.event["meta"]["id"] for e in later]


def test_no_pages_no_events():
    events = simulate_lifecycle(0, seed=1, start_ms=START)
    assert list(events) == [] and events.summary.invalid == 0 and events.summary.eligible == 0


# --- validity: the key test ---------------------------------------------------------------------


def test_every_event_meant_to_be_valid_validates_against_its_schema(run):
    gate = EventGate()
    checked = Counter()
    for e in run:
        if e.kind == "error":
            continue
        assert e.bug is None, f"EventGate accepted an event the simulation broke ({e.bug}): {e.event}"
        assert validate(e.event) == [], (e.kind, e.event)
        assert gate.check(e.event, e.stream) == []  # the schema title is the stream's, meta.stream matches
        assert e.stream == STREAM_OF_KIND[e.kind] == e.event["meta"]["stream"]
        assert e.topic == STREAMS[e.stream].topic
        assert e.key == page_key(e.event)
        assert e.arrival_ms == event_time_ms(e.event)  # meta.dt: when EventGate wrote it
        checked[e.kind] += 1
    assert checked["page_change"] > 500 and checked["prediction"] > 300 and checked["weighted_tags"] > 300
    schemas = {e.kind: e.event["$schema"] for e in run}
    assert schemas["page_change"] == PAGE_CHANGE_SCHEMA
    assert schemas["prediction"] == PREDICTION_SCHEMA
    assert schemas["weighted_tags"] == WEIGHTED_TAGS_SCHEMA


def test_the_broken_events_are_exactly_those_eventgate_rejects(run):
    gate = EventGate()
    errors = _of(run, "error")
    assert len(errors) == run.summary.invalid == run.summary.by_stream[ERROR_STREAM] > 0
    for e in errors:
        assert e.bug is not None, f"EventGate rejected an event the simulation meant to be valid: {e.event}"
        assert validate(e.event) == []  # the error event itself is a valid /error/2.1.0 event
        assert e.event["$schema"].startswith("/error/")
        assert e.stream == ERROR_STREAM and e.topic == STREAMS[ERROR_STREAM].topic
        assert e.arrival_ms == event_time_ms(e.event)
        rejected = json.loads(e.event["raw_event"])
        posted_to = e.event["errored_stream_name"]
        assert posted_to in (PAGE_CHANGE_STREAM, PREDICTION_STREAM, WEIGHTED_TAGS_STREAM)
        assert e.event["errored_schema_uri"] == rejected["$schema"]
        problems = gate.check(rejected, posted_to)
        assert problems and BUG_FIELD[e.bug] in "; ".join(problems)
        assert BUG_FIELD[e.bug] in e.event["message"]
        assert e.event["meta"]["request_id"] == rejected["meta"]["request_id"]
        assert e.key.startswith(f"{rejected.get('wiki_id', e.key.split(':')[0])}:")
    # every bug occurs, on the stream it belongs to
    assert {e.bug for e in errors} == set(BUG_FIELD)
    by_stream = Counter(e.event["errored_stream_name"] for e in errors)
    assert by_stream == Counter(run.summary.invalid_by_stream)
    # the error path is a small share of everything, roughly as configured (0.05)
    assert 0.03 < len(errors) / len(run) < 0.07


def test_no_invalid_events_when_the_share_is_zero(outcomes):
    assert outcomes.summary.invalid == 0 and not _of(outcomes, "error")


# --- what a prediction carries ------------------------------------------------------------------


def test_predictions_carry_their_edits_dt_wiki_page_revision_and_request(run):
    edits = _edits_by_rev(run)
    predictions = _of(run, "prediction")
    for p in predictions:
        pe = p.event
        edit = edits[(pe["wiki_id"], pe["revision"]["rev_id"])].event
        assert pe["dt"] == edit["dt"] and pe["wiki_id"] == edit["wiki_id"] and pe["page"] == edit["page"]
        assert pe["revision"] == _without_slots(edit["revision"])  # the model server drops content slots
        assert pe["performer"] == edit["performer"]
        assert pe["page_change_kind"] == edit["page_change_kind"] in ("create", "edit", "move")
        assert pe["meta"]["request_id"] == edit["meta"]["request_id"]
        assert pe["meta"]["domain"] == edit["meta"]["domain"] and pe["meta"]["uri"] == edit["meta"]["uri"]
        assert pe["meta"]["id"] != edit["meta"]["id"]
        classification = pe["predicted_classification"]
        assert classification["model_name"] == MODEL_NAME
        assert classification["predictions"]
        assert set(classification["predictions"]) == set(classification["probabilities"])
        scores = [classification["probabilities"][c] for c in classification["predictions"]]
        assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    assert len({p.event["meta"]["id"] for p in run}) == len(run)  # every event has its own id


def test_weighted_tags_follow_their_prediction(run):
    predictions = {}
    for p in _of(run, "prediction"):
        predictions.setdefault(p.event["meta"]["request_id"], p.event)
    for t in _of(run, "weighted_tags"):
        te = t.event
        prediction = predictions.get(te["meta"]["request_id"])
        if prediction is None:  # its prediction was rejected by EventGate
            assert any(e.kind == "error" and e.event["meta"]["request_id"] == te["meta"]["request_id"] for e in run)
            continue
        assert te["dt"] == prediction["dt"] and te["wiki_id"] == prediction["wiki_id"]
        assert te["page"] == {k: prediction["page"][k] for k in ("namespace_id", "page_id", "page_title")}
        probabilities = prediction["predicted_classification"]["probabilities"]
        assert te["weighted_tags"] == {"set": {TAG_PREFIX: [{"tag": c, "score": s} for c, s in probabilities.items()]}}
        assert te["rev_based"] is True


def test_filtered_changes_get_no_prediction(run):
    predicted = {(p.event["wiki_id"], p.event["revision"]["rev_id"]) for p in _of(run, "prediction")}
    filtered = 0
    for e in _of(run, "page_change"):
        ev = e.event
        if ev["page_change_kind"] == "delete":
            continue  # a delete carries the page's last revision, which may have its own prediction
        if ev["page"]["namespace_id"] != 0 or ev["page"]["is_redirect"] or ev["wiki_id"] == "commonswiki":
            filtered += 1
            assert (ev["wiki_id"], ev["revision"]["rev_id"]) not in predicted
    assert filtered > 50
    assert run.summary.filtered >= filtered


# --- arrival order ------------------------------------------------------------------------------


def test_arrival_order_is_causal(run):
    arrivals = [e.arrival_ms for e in run]
    assert arrivals == sorted(arrivals)
    position = {}
    for i, e in enumerate(run):
        if e.kind == "page_change" and e.event["page_change_kind"] != "delete":
            position[(e.event["wiki_id"], e.event["revision"]["rev_id"])] = i
    first_prediction = {}
    for i, e in enumerate(run):
        if e.kind == "prediction":
            edit = position[(e.event["wiki_id"], e.event["revision"]["rev_id"])]
            assert i > edit and e.arrival_ms > run[edit].arrival_ms
            first_prediction.setdefault(e.event["meta"]["request_id"], e.arrival_ms)
        if e.kind == "weighted_tags" and e.event["meta"]["request_id"] in first_prediction:
            assert e.arrival_ms > first_prediction[e.event["meta"]["request_id"]]
    # per page, the page_change stream is in change order; on each wiki, rev_ids increase with the
    # edit's time (not with arrival: EventBus's lag varies, and the stream is ordered per page only)
    per_page, per_wiki = defaultdict(list), defaultdict(list)
    for e in _of(run, "page_change"):
        per_page[e.key].append(e.event)
        if e.event["page_change_kind"] != "delete":
            per_wiki[e.event["wiki_id"]].append((e.event["dt"], e.event["revision"]["rev_id"]))
    # (a change whose event EventGate rejected still happened: the next one's parent is its revision)
    gaps = {e.key for e in _of(run, "error") if e.event["errored_stream_name"] == PAGE_CHANGE_STREAM}
    for key, changes in per_page.items():
        dts = [c["dt"] for c in changes]
        assert dts == sorted(dts) and len(set(dts)) == len(dts)
        revs = [c["revision"]["rev_id"] for c in changes if c["page_change_kind"] != "delete"]
        assert revs == sorted(revs) and len(set(revs)) == len(revs)
        for before, after in zip(changes, changes[1:]):
            if after["page_change_kind"] != "delete" and key not in gaps:
                assert after["revision"]["rev_parent_id"] == before["revision"]["rev_id"]
        assert all(c["page_change_kind"] != "delete" for c in changes[:-1])  # nothing after a delete
    for revs in per_wiki.values():
        by_time = [rev for _, rev in sorted(revs)]
        assert by_time == sorted(by_time)


def test_page_changes_look_like_mediawikis(run):
    changes = [e.event for e in _of(run, "page_change")]
    kinds = Counter(c["page_change_kind"] for c in changes)
    assert set(kinds) == {"create", "edit", "move", "delete"} and kinds["edit"] > kinds["create"] > kinds["move"]
    assert len({c["wiki_id"] for c in changes}) >= 4
    for c in changes:
        kind = c["page_change_kind"]
        assert c["changelog_kind"] == {"create": "insert", "delete": "delete"}.get(kind, "update")
        assert c["revision"]["rev_dt"] == c["dt"] or kind == "delete"
        assert c["meta"]["uri"].startswith(f"https://{c['meta']['domain']}/wiki/")
        if kind == "create":
            assert c["revision"]["rev_parent_id"] == 0 and "prior_state" not in c
        if kind == "edit":
            assert c["prior_state"]["revision"]["rev_id"] == c["revision"]["rev_parent_id"]
        if kind == "move":
            assert c["prior_state"]["page"]["page_title"] != c["page"]["page_title"]
        if kind == "delete":
            assert c["page"]["revision_count"] >= 1 and "sysop" in c["performer"]["groups"]
        if c["page"]["namespace_id"] != 0:
            assert ":" in c["page"]["page_title"]
    # MediaWiki's dt has whole seconds; EventGate's meta.dt milliseconds, a little later
    assert all(c["dt"].endswith(":00Z") or c["dt"][-4] != "." for c in changes)
    lags = sorted(event_time_ms(c) - _ms(c["dt"]) for c in changes if c["page_change_kind"] != "delete")
    assert 0 < lags[0] and lags[len(lags) // 2] < 5_000


def _ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


# --- outcome shares -----------------------------------------------------------------------------


def test_outcome_shares_are_roughly_as_configured(outcomes):
    s = outcomes.summary
    assert s.eligible > 1000
    assert s.eligible == s.on_time + s.late + s.lost + s.failed + s.no_result
    assert s.lost / s.eligible == pytest.approx(0.1, abs=0.035)
    assert s.failed / s.eligible == pytest.approx(0.1, abs=0.035)
    assert s.late / s.eligible == pytest.approx(0.15, abs=0.04)
    assert s.duplicates / s.eligible == pytest.approx(0.1, abs=0.035)
    assert s.no_result == 0

    # ... and the counts are what the events show
    edits = _edits_by_rev(outcomes)
    first_delay: dict[tuple[str, int], int] = {}
    answers = Counter()
    for p in _of(outcomes, "prediction"):
        rev = (p.event["wiki_id"], p.event["revision"]["rev_id"])
        answers[rev] += 1
        first_delay.setdefault(rev, event_time_ms(p.event) - event_time_ms(edits[rev].event))
    assert len(answers) == s.predicted == s.on_time + s.late
    assert sum(answers.values()) - len(answers) == s.duplicates
    assert sum(n == 2 for n in answers.values()) == s.duplicates  # at most one retry duplicates
    late = [d for d in first_delay.values() if d >= LATE_AFTER_MS]
    assert len(late) == s.late
    assert all(50_000 < d < 8 * 60_000 for d in late)  # ChangeProp's retries: about 1 or 6 minutes
    on_time = sorted(d for d in first_delay.values() if d < LATE_AFTER_MS)
    assert 1_000 < on_time[len(on_time) // 2] < 2_200  # lognormal, median 1.5 s
    assert len(_of(outcomes, "weighted_tags")) == len(_of(outcomes, "prediction"))


def test_pages_without_a_country_get_no_prediction(run):
    s = run.summary
    # default no_country_share 0.1 of the pages (lost 0.02, failed 0.03 take precedence); a page's
    # edits share its fate, so the share of edits varies more than a per-edit draw would
    assert 0.03 < s.no_result / s.eligible < 0.25
    predicted_pages = {e.key for e in _of(run, "prediction")}
    answered_pages = {e.key for e in _of(run, "weighted_tags")} | predicted_pages
    assert len(answered_pages) < len({e.key for e in _of(run, "page_change")
                                      if e.event["page"]["namespace_id"] == 0 and not e.event["page"]["is_redirect"]
                                      and e.event["wiki_id"] != "commonswiki"})
    assert s.eligible == s.on_time + s.late + s.lost + s.failed + s.no_result


def test_summary_counts_match_the_events(run):
    s = run.summary
    assert s.by_stream == {stream: sum(e.stream == stream for e in run) for stream in s.by_stream}
    assert s.by_topic == dict(Counter(e.topic for e in run))
    assert sum(s.by_stream.values()) == len(run)
    page_change_errors = s.invalid_by_stream.get(PAGE_CHANGE_STREAM, 0)
    assert sum(s.page_changes.values()) == s.by_stream[PAGE_CHANGE_STREAM] + page_change_errors
    assert s.eligible + s.filtered == s.by_stream[PAGE_CHANGE_STREAM]
    assert s.as_dict()["predicted"] == s.predicted
    assert s.pages == 300 and len({e.key for e in run}) <= 300


# --- options and the scenario -------------------------------------------------------------------


def test_recent_data_has_arrived_by_now():
    before = time.time() * 1000
    events = simulate_lifecycle(30, seed=2, start_ms=None)
    assert max(e.arrival_ms for e in events) <= time.time() * 1000
    assert min(e.arrival_ms for e in events) >= before - 6 * 3600_000 - 11 * 60_000


@pytest.mark.parametrize("bad", [{"invalid_share": 1.5}, {"lost_share": -0.1},
                                 {"lost_share": 0.5, "failed_share": 0.4, "late_share": 0.2}, {"edits_per_page": 0.5}])
def test_bad_parameters_are_rejected(bad):
    with pytest.raises(ValueError):
        simulate_lifecycle(3, **bad)


def test_the_liftwing_scenario_writes_each_event_to_its_streams_topic_keyed_by_page():
    records = SCENARIOS["liftwing"](12, 4, 0.1, START)
    events = simulate_lifecycle(12, seed=4, start_ms=START)
    assert records == liftwing_scenario(12, 4, 0.0, START)
    assert records == [TopicRecord(e.topic, e.key, e.event) for e in events]
    assert {r.topic for r in records} <= {s.topic for s in STREAMS.values()}
    assert all(r.key == f"{r.value['wiki_id']}:{r.value['page']['page_id']}" for r in records
               if r.topic != STREAMS[ERROR_STREAM].topic)
