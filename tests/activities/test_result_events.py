"""Results as events: every change a root publishes is a `timeline/result_change`
event that validates against the project's own schema."""

from timeline.activities.results import RESULT_SCHEMA, result_events
from timeline.dsl.compiler import compile_expression
from timeline.dsl.incremental import EventBatch, IncrementalEvaluator, KeyTimeline
from timeline.models import ResultsBatch
from timeline.sources.eventplatform import SchemaRepository


def _batch() -> ResultsBatch:
    plan = compile_expression(open("examples/cir.tl").read())
    ev = IncrementalEvaluator(plan)
    out = ev.apply(EventBatch(keys=["s1", "s1", "s2"], times=[1000, 5000, 2000],
                              columns={"playerStateChange": ["play", "buffer", None]}))
    return ResultsBatch(timeline="cir", shard=0, seq=3, patches=out.patches[plan.root], watermarks=out.watermarks,
                        closed={"old": KeyTimeline(starts=[10, 20], values=[0, 5], slopes=[1.0, 0.0])},
                        results_topic="timeline-results-cir")


def test_every_result_event_validates():
    repo = SchemaRepository()
    events = result_events(_batch(), 1_738_934_940_000)
    assert [e["key"] for e in events] == ["s1", "s2", "old"]
    for event in events:
        assert repo.validate_against(event, RESULT_SCHEMA) == [], event
        assert repo.validate(event) == []  # found by its own $schema, as a downstream consumer would
    s1 = events[0]
    assert s1["since"] == 1000 and s1["dt"] == "1970-01-01T00:00:01.000Z" and s1["watermark"] == 5000
    assert s1["spans"][-1] == {"start": 5000, "end": None, "value": 0, "slope": 1.0}
    assert events[2]["closed"] is True and events[2]["spans"][0] == {"start": 10, "end": 20, "value": 0, "slope": 1.0}
    assert s1["meta"]["stream"] == "timeline.result_change" and s1["meta"]["domain"] == "cir"


def test_an_invalid_result_event_is_reported():
    repo = SchemaRepository()
    event = result_events(_batch(), 0)[0]
    del event["key"]
    event["spans"][0]["start"] = "soon"
    errors = repo.validate_against(event, RESULT_SCHEMA)
    assert any("'key' is a required property" in e for e in errors)
    assert any("soon" in e for e in errors)
