"""Seeded simulation of the LiftWing event lifecycle (article-country), pure.

What happens on the Wikimedia event platform, one page at a time
(`../shared/wikimedia/README.md`):

1. Editors create, edit, move and delete pages on a few wikis. MediaWiki
   (EventBus) posts one `mediawiki/page/change` event per change to EventGate,
   on stream `mediawiki.page_change.v1`, shortly after the change (`dt` is the
   change, `meta.dt` when EventGate received it).
2. ChangeProp sends the edits, creates and moves of namespace-0, non-redirect
   Wikipedia pages (not deletes, not other namespaces, not redirects, not
   Commons) to the article-country model server, `{"event": <page_change>}`.
3. The model server answers most of them after a lognormal delay of seconds.
   Some answers are late (ChangeProp retried after a 502/503, about 1 or 6
   minutes later), some never come (lost), some fail (model error: no
   prediction), some come twice (a retry after a timeout whose first attempt had
   succeeded: same content, new `meta.id`), and pages with no country get no
   prediction (the model found no result). An answer is two events, both built
   from the page_change event: a `prediction_classification_change` on
   `mediawiki.article_country_prediction_change.v1` (the page_change's `dt`,
   `wiki_id`, `page`, `revision` (without content slots), `performer`, ...;
   `meta.request_id` and `meta.domain` / `meta.uri` carried over, a new
   `meta.id`; `predicted_classification` with the countries), then a
   cirrussearch `page_weighted_tags_change` (`classification.prediction.
   articlecountry` tags with scores), as the real model server does.
4. EventGate validates every event (`sources.eventplatform.EventGate`): valid
   ones go to their stream; invalid ones become `error` events on
   `eventgate-main.error.validation`. A configurable share of events is broken
   on purpose (`invalid_share`: a MediaWiki or model-server bug dropping a
   required field or writing a wrong type), so the error path is exercised. A
   page_change that EventGate rejects never reaches Kafka, so ChangeProp never
   sees it and it gets no prediction.

`simulate_lifecycle` returns every event in *arrival* order (when EventGate
wrote it to its stream: the event's `meta.dt`), with its stream, Pulsar topic
(`sources.eventplatform.STREAMS`) and page key (`<wiki_id>:<page_id>`), plus a
summary of what happened (counts by stream, lost, failed, late, duplicates,
invalid, ...). The same arguments give the same events: everything random,
UUIDs included, comes from one `numpy` generator seeded by `seed`; the random
draws do not depend on what EventGate accepts. No Pulsar here: the
`liftwing` scenario of `sample-event-producer` writes the events
(`timeline.cli.producer`, `timeline.producers.pulsar_producer.TopicRecord`).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from timeline.producers.liftwing_events import (
    Post,
    Simulation,
    check_shares,
    eligible,
    topic_of,
)
from timeline.producers.pulsar_producer import TopicRecord
from timeline.producers.wikis import (
    DEFAULT_SPAN_MS,
    DEFAULT_START_MS,
    ERROR_STREAM,
    LATE_AFTER_MS,
    MODEL_NAME,
    MODEL_VERSION,
    PAGE_CHANGE_SCHEMA,
    PAGE_CHANGE_STREAM,
    PREDICTION_SCHEMA,
    PREDICTION_STREAM,
    RECENT_MARGIN_MS,
    TAG_PREFIX,
    WEIGHTED_TAGS_SCHEMA,
    WEIGHTED_TAGS_STREAM,
    WIKIS,
)
from timeline.sources.eventplatform import EventGate

__all__ = [
    "DEFAULT_SPAN_MS",
    "DEFAULT_START_MS",
    "ERROR_STREAM",
    "LATE_AFTER_MS",
    "LifecycleEvent",
    "LifecycleEvents",
    "LifecycleSummary",
    "MODEL_NAME",
    "MODEL_VERSION",
    "PAGE_CHANGE_SCHEMA",
    "PAGE_CHANGE_STREAM",
    "PREDICTION_SCHEMA",
    "PREDICTION_STREAM",
    "TAG_PREFIX",
    "WEIGHTED_TAGS_SCHEMA",
    "WEIGHTED_TAGS_STREAM",
    "WIKIS",
    "liftwing_scenario",
    "simulate_lifecycle",
]

# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One event as it arrives on its stream.

    `kind` is `page_change`, `prediction`, `weighted_tags` or `error`. `bug` says how the
    simulation broke the event on purpose (for an `error` event: the rejected event's bug),
    None for an event meant to be valid; so a valid-stream event with a bug, or an error
    event without one, is a disagreement between the simulation and EventGate.
    """

    stream: str
    topic: str
    key: str  # <wiki_id>:<page_id>
    event: dict[str, Any]
    arrival_ms: int
    kind: str
    bug: str | None = None

    def to_record(self) -> TopicRecord:
        return TopicRecord(self.topic, self.key, self.event)


@dataclass(frozen=True)
class LifecycleSummary:
    """What happened. The prediction outcomes count eligible edits: page changes that reached
    Kafka and that ChangeProp sends to article-country (each edit has exactly one outcome)."""

    pages: int
    by_stream: dict[str, int]  # events written to each stream, the error stream included
    by_topic: dict[str, int]
    page_changes: dict[str, int]  # page_change events posted, by page_change_kind
    eligible: int  # edits sent to the model server
    filtered: int  # accepted page changes ChangeProp does not send (namespace, redirect, wiki, delete)
    on_time: int  # answered within seconds
    late: int  # first answer after LATE_AFTER_MS (a retry)
    lost: int  # never answered
    failed: int  # model error: no prediction
    no_result: int  # the model found no country: no prediction
    duplicates: int  # extra answers (each is one more prediction and weighted tags event)
    invalid: int  # events EventGate rejected (= events on the error stream)
    invalid_by_stream: dict[str, int] = field(default_factory=dict)  # by the stream they were posted to

    @property
    def predicted(self) -> int:
        """Eligible edits that got at least one answer."""
        return self.on_time + self.late

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "predicted": self.predicted}


class LifecycleEvents(list):
    """`list[LifecycleEvent]` in arrival order, with the run's `summary`."""

    def __init__(self, events: list[LifecycleEvent], summary: LifecycleSummary):
        super().__init__(events)
        self.summary = summary


def simulate_lifecycle(
    n_pages: int,
    seed: int = 0,
    start_ms: int | None = DEFAULT_START_MS,
    invalid_share: float = 0.01,
    *,
    span_ms: int = DEFAULT_SPAN_MS,
    edits_per_page: float = 4.0,
    create_share: float = 0.2,
    move_share: float = 0.02,
    delete_share: float = 0.05,
    non_article_share: float = 0.15,
    redirect_share: float = 0.06,
    no_country_share: float = 0.1,
    lost_share: float = 0.02,
    failed_share: float = 0.03,
    late_share: float = 0.05,
    duplicate_share: float = 0.03,
    delay_median_s: float = 1.5,
    delay_sigma: float = 0.7,
    gate: Any = None,
) -> LifecycleEvents:
    """Simulate `n_pages` pages over `span_ms` from `start_ms`; every event in arrival order.

    `start_ms` None makes the data recent (the span ends ten minutes before now, so every
    prediction has arrived by now). The shares of lost, failed, late and duplicated answers
    are of the eligible edits (late and duplicated: of those on pages with a country; the
    model answers nothing for the `no_country_share` of pages, counted as `no_result`
    unless the request was lost or failed first); `invalid_share` is of every posted event.
    `gate` is an EventGate (default `sources.eventplatform.EventGate()`).
    """
    check_shares(invalid_share=invalid_share, create_share=create_share, move_share=move_share,
                  delete_share=delete_share, non_article_share=non_article_share, redirect_share=redirect_share,
                  no_country_share=no_country_share, lost_share=lost_share, failed_share=failed_share,
                  late_share=late_share, duplicate_share=duplicate_share)
    if lost_share + failed_share + late_share > 1:
        raise ValueError("lost_share + failed_share + late_share must be at most 1")
    if n_pages < 0 or span_ms <= 0 or edits_per_page < 1 or delay_median_s <= 0 or delay_sigma < 0:
        raise ValueError("need n_pages >= 0, span_ms > 0, edits_per_page >= 1, delay_median_s > 0 and "
                         "delay_sigma >= 0")
    if start_ms is None:
        start_ms = (time.time_ns() // 1_000_000 - span_ms - RECENT_MARGIN_MS) // 1000 * 1000
    gate = gate if gate is not None else EventGate()
    rng = np.random.default_rng(seed)
    sim = Simulation(rng, start_ms, span_ms)

    pages = sim.plan_pages(n_pages, non_article_share, redirect_share, create_share, no_country_share)
    changes = sim.plan_changes(pages, edits_per_page, move_share, delete_share)

    # MediaWiki: one page_change per change, posted shortly after it; EventGate decides which reach Kafka.
    edits = [sim.page_change(pages[c.page], c) for c in changes]
    for post in edits:
        sim.maybe_break(post, invalid_share)
    accepted, edit_errors = sim.through_gate(gate, edits)

    # ChangeProp -> article-country -> EventGate, for the eligible edits that reached Kafka. The draws
    # are made for every eligible edit, accepted or not, so they do not depend on the validator.
    outcome_p = np.array([lost_share, failed_share, late_share])
    dup_p = duplicate_share / max(1e-12, 1 - lost_share - failed_share)
    counts = Counter()
    answers: list[Post] = []
    for post, change in zip(edits, changes):
        page = pages[change.page]
        reached_kafka = post.seq in accepted
        if not eligible(page, change):
            counts["filtered"] += reached_kafka
            continue
        outcome, delays = sim.answer_delays(outcome_p, dup_p, delay_median_s, delay_sigma)
        if outcome in ("on_time", "late") and not page.countries:
            outcome, delays = "no_result", []
        made = []
        if delays:
            answer = sim.predict(page)
            for delay in delays:
                made.extend(sim.model_events(post, answer, post.at_ms + delay))
        for answer_post in made:
            sim.maybe_break(answer_post, invalid_share)
        if reached_kafka:
            counts["eligible"] += 1
            counts[outcome] += 1
            counts["duplicates"] += max(0, len(delays) - 1)
            answers.extend(made)
    _, answer_errors = sim.through_gate(gate, answers)

    posts = sorted(edits + answers, key=lambda p: (p.at_ms, p.seq))
    errors = {**edit_errors, **answer_errors}
    out: list[LifecycleEvent] = []
    for post in posts:
        error = errors.get(post.seq)
        if error is None:
            out.append(LifecycleEvent(post.stream, topic_of(post.stream), post.key, post.event,
                                      start_ms + post.at_ms, post.kind, post.bug))
        else:
            out.append(LifecycleEvent(ERROR_STREAM, topic_of(ERROR_STREAM), post.key, error,
                                      start_ms + post.at_ms, "error", post.bug))

    by_stream = Counter(e.stream for e in out)
    summary = LifecycleSummary(
        pages=n_pages,
        by_stream={s: by_stream[s] for s in (PAGE_CHANGE_STREAM, PREDICTION_STREAM, WEIGHTED_TAGS_STREAM,
                                             ERROR_STREAM)},
        by_topic=dict(Counter(e.topic for e in out)),
        page_changes=dict(Counter(c.kind for c in changes)),
        eligible=counts["eligible"], filtered=counts["filtered"], on_time=counts["on_time"],
        late=counts["late"], lost=counts["lost"], failed=counts["failed"], no_result=counts["no_result"],
        duplicates=counts["duplicates"], invalid=len(errors),
        invalid_by_stream=dict(Counter(p.stream for p in posts if p.seq in errors)),
    )
    return LifecycleEvents(out, summary)


def liftwing_scenario(sessions: int, seed: int, out_of_order: float, start_ms: int | None) -> list[TopicRecord]:
    """`sample-event-producer --scenario liftwing`: `sessions` pages, each event to its stream's topic.

    `out_of_order` does not apply (lateness is the model server's: `late_share`); start_ms None
    makes the data recent.
    """
    del out_of_order
    return [e.to_record() for e in simulate_lifecycle(sessions, seed=seed, start_ms=start_ms)]
