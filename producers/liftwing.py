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
(`producers.cli`, `producers.pulsar_producer.TopicRecord`).
"""

from __future__ import annotations

import copy
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import numpy as np

from producers.pulsar_producer import TopicRecord
from sources.eventplatform import STREAMS, EventGate

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

PAGE_CHANGE_STREAM = "mediawiki.page_change.v1"
PREDICTION_STREAM = "mediawiki.article_country_prediction_change.v1"
WEIGHTED_TAGS_STREAM = "mediawiki.cirrussearch.page_weighted_tags_change.rc0"
ERROR_STREAM = "eventgate-main.error.validation"

PAGE_CHANGE_SCHEMA = "/mediawiki/page/change/1.2.0"
PREDICTION_SCHEMA = "/mediawiki/page/prediction_classification_change/1.1.0"
WEIGHTED_TAGS_SCHEMA = "/development/cirrussearch/page_weighted_tags_change/1.0.0"

MODEL_NAME = "article-country"
MODEL_VERSION = "1"  # what the production model server sends
TAG_PREFIX = "classification.prediction.articlecountry"

DEFAULT_START_MS = 1_795_564_800_000  # 2026-11-25T00:00:00Z
DEFAULT_SPAN_MS = 6 * 3600 * 1000
# A prediction whose first answer comes this long after its edit counts as late (only retried
# answers do: on-time delays are capped below it).
LATE_AFTER_MS = 30_000
# "recent" data (start_ms None) ends this long before now, so that the latest retried
# predictions (at most ~7.5 minutes after their edit) have arrived by now.
_RECENT_MARGIN_MS = 10 * 60 * 1000

# --- the wikis -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Wiki:
    wiki_id: str
    domain: str
    weight: float  # share of the simulated pages
    is_wikipedia: bool  # article-country only serves Wikipedias
    rev_base: int  # rev_id of the wiki's last revision before the simulated span
    edits_per_s: float  # all of the wiki's edits (rev_ids advance by these between simulated ones)
    page_id_base: int  # pages created during the span get ids above this
    namespaces: dict[int, str]  # namespace id -> local title prefix
    home_countries: tuple[str, ...]  # countries its articles are more often about


WIKIS: tuple[Wiki, ...] = (
    Wiki("enwiki", "en.wikipedia.org", 0.45, True, 1_322_400_000, 2.2, 82_300_000,
         {1: "Talk", 2: "User", 3: "User_talk", 4: "Wikipedia", 10: "Template", 14: "Category"},
         ("United States", "United Kingdom", "India", "Canada", "Australia")),
    Wiki("dewiki", "de.wikipedia.org", 0.2, True, 262_100_000, 0.45, 13_600_000,
         {1: "Diskussion", 2: "Benutzer", 3: "Benutzer_Diskussion", 4: "Wikipedia", 10: "Vorlage",
          14: "Kategorie"},
         ("Germany", "Austria", "Switzerland")),
    Wiki("frwiki", "fr.wikipedia.org", 0.15, True, 231_700_000, 0.4, 17_200_000,
         {1: "Discussion", 2: "Utilisateur", 3: "Discussion_utilisateur", 4: "Wikipédia", 10: "Modèle",
          14: "Catégorie"},
         ("France", "Belgium", "Canada", "Switzerland")),
    Wiki("eswiki", "es.wikipedia.org", 0.12, True, 171_300_000, 0.3, 11_700_000,
         {1: "Discusión", 2: "Usuario", 3: "Usuario_discusión", 4: "Wikipedia", 10: "Plantilla",
          14: "Categoría"},
         ("Spain", "Mexico", "Argentina", "Colombia", "Chile")),
    Wiki("commonswiki", "commons.wikimedia.org", 0.08, False, 1_112_600_000, 3.5, 181_000_000,
         {1: "Talk", 2: "User", 3: "User_talk", 4: "Commons", 6: "File", 10: "Template", 14: "Category"},
         ()),
)

_COUNTRIES: tuple[str, ...] = (
    "United States", "United Kingdom", "India", "Canada", "Australia", "Germany", "Austria", "Switzerland",
    "France", "Belgium", "Spain", "Mexico", "Argentina", "Colombia", "Chile", "Italy", "Japan", "China",
    "Brazil", "Russia", "Nigeria", "Kenya", "South Africa", "Egypt", "Turkey", "Iran", "Indonesia",
    "Philippines", "Poland", "Netherlands", "Sweden", "Norway", "Ireland", "New Zealand", "Pakistan",
    "Bangladesh", "Vietnam", "South Korea", "Ukraine", "Greece",
)

_WORDS: tuple[str, ...] = (
    "River", "Lake", "Mount", "Saint", "North", "South", "Castle", "Battle", "Church", "Station", "Bridge",
    "Island", "Valley", "Harbour", "Museum", "College", "Railway", "Festival", "Market", "Cathedral",
    "Forest", "Abbey", "Tower", "Park", "Palace", "Theatre", "Airport", "Canal", "Monastery", "Square",
)
_NAMES: tuple[str, ...] = (
    "Alden", "Brava", "Corvin", "Delmar", "Esk", "Farrow", "Galen", "Hollis", "Ivra", "Jorvik", "Kestrel",
    "Lorne", "Marden", "Nessa", "Orrin", "Pell", "Quarry", "Rhosyn", "Selby", "Tarn", "Ulla", "Varde",
    "Wren", "Yarrow", "Zell", "Amalfi", "Bexley", "Caddo", "Dunmore", "Elgin", "Fenwick", "Gorse",
)
_QUALIFIERS: tuple[str, ...] = (
    "(band)", "(film)", "(1987 film)", "(novel)", "(footballer)", "(river)", "(album)", "(village)",
    "(politician)", "(ship)",
)
_EDIT_COMMENTS: tuple[str, ...] = (
    "copyedit", "link", "/* History */ expanded", "Added citation", "Reverted edits by vandal",
    "/* Early life */ fix typo", "Updated infobox", "rm unsourced claim", "Added category", "ce",
    "/* References */", "Undid revision", "clean up, typo(s) fixed", "Adding short description",
)
_CREATE_COMMENTS: tuple[str, ...] = (
    "Created page with '{{Short description}}'", "new article", "Created by translating the page",
    "stub", "Redirected page to [[{target}]]",
)
_DELETE_COMMENTS: tuple[str, ...] = (
    "[[WP:CSD#A7|A7]]: No credible indication of importance", "[[WP:CSD#G11|G11]]: Unambiguous advertising",
    "Copyright violation", "Deleted per [[WP:AFD]] discussion", "Housekeeping",
)

# Bugs that break an event on purpose (the error path): each is a missing required field or a
# wrong type, which any draft-07 validator rejects (even one that tolerates unknown fields).


def _drop(*path: str) -> Callable[[dict[str, Any]], None]:
    def apply(event: dict[str, Any]) -> None:
        node = event
        for part in path[:-1]:
            node = node[part]
        del node[path[-1]]

    return apply


def _stringify(*path: str) -> Callable[[dict[str, Any]], None]:
    def apply(event: dict[str, Any]) -> None:
        node = event
        for part in path[:-1]:
            node = node[part]
        value = node[path[-1]]
        node[path[-1]] = ",".join(value) if isinstance(value, list) else str(value)

    return apply


_BUGS: dict[str, tuple[tuple[str, Callable[[dict[str, Any]], None]], ...]] = {
    PAGE_CHANGE_STREAM: (
        ("revision.rev_dt dropped", _drop("revision", "rev_dt")),
        ("page.page_id as a string", _stringify("page", "page_id")),
    ),
    PREDICTION_STREAM: (
        ("performer dropped", _drop("performer")),
        ("predicted_classification.model_version dropped", _drop("predicted_classification", "model_version")),
        ("predicted_classification.predictions as a string", _stringify("predicted_classification", "predictions")),
    ),
    WEIGHTED_TAGS_STREAM: (
        ("page.namespace_id dropped", _drop("page", "namespace_id")),
        ("wiki_id dropped", _drop("wiki_id")),
    ),
}


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


# --- the simulation --------------------------------------------------------------------------


@dataclass
class _User:
    user_id: int
    user_text: str
    groups: list[str]
    is_bot: bool
    is_temp: bool
    registration_dt: str
    edit_count: int

    def snapshot(self) -> dict[str, Any]:
        return {"user_text": self.user_text, "groups": list(self.groups), "is_bot": self.is_bot,
                "is_system": False, "is_temp": self.is_temp, "user_id": self.user_id,
                "edit_count": self.edit_count, "registration_dt": self.registration_dt}


@dataclass
class _Page:
    wiki: Wiki
    page_id: int
    title: str  # without the namespace prefix
    namespace_id: int
    is_redirect: bool
    redirect_target: tuple[int, str] | None
    created: bool  # created during the span (else it existed before)
    countries: list[str]  # what the model finds (empty: no result)
    users: list[int]  # indices into the wiki's user pool of its regular editors
    revision: dict[str, Any] | None = None  # current revision (as in events)
    revision_count: int = 0
    last_arrival: int = -1

    def prefixed_title(self) -> str:
        if self.namespace_id == 0:
            return self.title
        return f"{self.wiki.namespaces[self.namespace_id]}:{self.title}"

    @property
    def key(self) -> str:
        return f"{self.wiki.wiki_id}:{self.page_id}"


@dataclass
class _Change:
    t_ms: int  # offset of the change from the start, whole seconds
    page: int
    kind: str  # create / edit / move / delete
    seq: int


@dataclass
class _Post:
    """An event posted to EventGate at `at_ms` (offset from the start)."""

    stream: str
    event: dict[str, Any]
    at_ms: int
    key: str
    kind: str
    bug: str | None
    seq: int = 0


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
    _check_shares(invalid_share=invalid_share, create_share=create_share, move_share=move_share,
                  delete_share=delete_share, non_article_share=non_article_share, redirect_share=redirect_share,
                  no_country_share=no_country_share, lost_share=lost_share, failed_share=failed_share,
                  late_share=late_share, duplicate_share=duplicate_share)
    if lost_share + failed_share + late_share > 1:
        raise ValueError("lost_share + failed_share + late_share must be at most 1")
    if n_pages < 0 or span_ms <= 0 or edits_per_page < 1 or delay_median_s <= 0 or delay_sigma < 0:
        raise ValueError("need n_pages >= 0, span_ms > 0, edits_per_page >= 1, delay_median_s > 0 and "
                         "delay_sigma >= 0")
    if start_ms is None:
        start_ms = (time.time_ns() // 1_000_000 - span_ms - _RECENT_MARGIN_MS) // 1000 * 1000
    gate = gate if gate is not None else EventGate()
    rng = np.random.default_rng(seed)
    sim = _Simulation(rng, start_ms, span_ms)

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
    answers: list[_Post] = []
    for post, change in zip(edits, changes):
        page = pages[change.page]
        reached_kafka = post.seq in accepted
        if not _eligible(page, change):
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
            out.append(LifecycleEvent(post.stream, _topic(post.stream), post.key, post.event,
                                      start_ms + post.at_ms, post.kind, post.bug))
        else:
            out.append(LifecycleEvent(ERROR_STREAM, _topic(ERROR_STREAM), post.key, error,
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


# --- helpers ---------------------------------------------------------------------------------


def _check_shares(**shares: float) -> None:
    for name, value in shares.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a fraction between 0 and 1, got {value!r}")


def _eligible(page: _Page, change: _Change) -> bool:
    """ChangeProp's article-country rule: edits, creates and moves of namespace-0 non-redirect
    pages of a Wikipedia."""
    return (change.kind in ("create", "edit", "move") and page.namespace_id == 0 and not page.is_redirect
            and page.wiki.is_wikipedia)


def _topic(stream: str) -> str:
    return STREAMS[stream].topic


def iso_seconds(ms: int) -> str:
    """`2026-11-25T10:00:00Z` (MediaWiki's precision), with milliseconds only when not whole."""
    dt = datetime.fromtimestamp(ms // 1000, tz=UTC)
    if ms % 1000:
        return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"
    return f"{dt:%Y-%m-%dT%H:%M:%S}Z"


def iso_millis(ms: int) -> str:
    """`2026-11-25T10:00:04.238Z` (EventGate's `meta.dt`)."""
    dt = datetime.fromtimestamp(ms // 1000, tz=UTC)
    return f"{dt:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


class _Simulation:
    def __init__(self, rng: np.random.Generator, start_ms: int, span_ms: int):
        self.rng = rng
        self.start_ms = start_ms
        self.span_ms = span_ms
        self.users: dict[str, list[_User]] = {}
        self.rev_counter: dict[str, tuple[int, int]] = {w.wiki_id: (w.rev_base, 0) for w in WIKIS}
        self.seq = 0

    # -- random helpers --

    def uuid(self) -> str:
        return str(uuid.UUID(bytes=self.rng.bytes(16), version=4))

    def sha1(self) -> str:
        digits = "0123456789abcdefghijklmnopqrstuvwxyz"
        return "".join(digits[i] for i in self.rng.integers(0, 36, 31))

    def pick(self, items, p=None):
        return items[int(self.rng.choice(len(items), p=p))]

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    # -- pages and editors --

    def user_pool(self, wiki: Wiki, size: int) -> list[_User]:
        pool = self.users.get(wiki.wiki_id)
        if pool is not None:
            return pool
        rng = self.rng
        pool = []
        next_id = int(rng.integers(1_000, 50_000))
        for i in range(size):
            kind = "sysop" if i == 0 else self.pick(("user", "user", "user", "user", "temp", "bot"))
            next_id += int(rng.integers(1, 2_000_000))
            reg = self.start_ms - int(rng.integers(1, 15 * 365)) * 86_400_000 - int(rng.integers(0, 86_400_000))
            if kind == "temp":
                reg = self.start_ms - int(rng.integers(0, 60 * 86_400_000))
                year = datetime.fromtimestamp(reg // 1000, tz=UTC).year
                text = f"~{year}-{int(rng.integers(10000, 99999))}-{int(rng.integers(1, 99))}"  # a temporary account
                pool.append(_User(next_id, text, ["*", "temp"], False, True, iso_seconds(reg // 1000 * 1000),
                                  int(rng.integers(0, 30))))
                continue
            name = f"{self.pick(_NAMES)}{self.pick(_WORDS)}{int(rng.integers(1, 999)) if rng.random() < 0.4 else ''}"
            groups = ["*", "user", "autoconfirmed"]
            if kind == "bot":
                name, groups = f"{name}Bot", ["bot", *groups]
            elif kind == "sysop":
                groups = ["sysop", *groups]
            elif rng.random() < 0.3:
                groups = ["extendedconfirmed", *groups]
            edits = int(rng.lognormal(np.log(2_000 if kind != "user" else 300), 1.5))
            pool.append(_User(next_id, name, groups, kind == "bot", False, iso_seconds(reg // 1000 * 1000), edits))
        self.users[wiki.wiki_id] = pool
        return pool

    def plan_pages(self, n: int, non_article_share: float, redirect_share: float, create_share: float,
                   no_country_share: float) -> list[_Page]:
        rng = self.rng
        weights = np.array([w.weight for w in WIKIS])
        weights /= weights.sum()
        pool_size = max(12, n // 3)
        taken: set[tuple[str, str]] = set()
        ids_taken: set[tuple[str, int]] = set()
        next_new_id = {w.wiki_id: w.page_id_base + int(rng.integers(0, 5_000)) for w in WIKIS}
        pages = []
        for _ in range(n):
            wiki = self.pick(WIKIS, weights)
            pool = self.user_pool(wiki, pool_size)
            if rng.random() < non_article_share:
                namespace_id = self.pick(list(wiki.namespaces))
            else:
                namespace_id = 0
            while True:
                title = self.title(namespace_id, pool)
                if (wiki.wiki_id, f"{namespace_id}:{title}") not in taken:
                    taken.add((wiki.wiki_id, f"{namespace_id}:{title}"))
                    break
            created = bool(rng.random() < create_share)
            if created:
                next_new_id[wiki.wiki_id] += int(rng.integers(1, 400))
                page_id = next_new_id[wiki.wiki_id]
            else:
                while True:
                    page_id = int(rng.integers(1, wiki.page_id_base))
                    if (wiki.wiki_id, page_id) not in ids_taken:
                        break
            ids_taken.add((wiki.wiki_id, page_id))
            is_redirect = bool(namespace_id == 0 and rng.random() < redirect_share)
            target = (int(rng.integers(1, wiki.page_id_base)), self.title(0, pool)) if is_redirect else None
            countries: list[str] = []
            if rng.random() >= no_country_share:
                k = int(rng.choice([1, 2, 3], p=[0.6, 0.3, 0.1]))
                while len(countries) < k:
                    c = self.pick(wiki.home_countries) if wiki.home_countries and rng.random() < 0.5 else \
                        self.pick(_COUNTRIES)
                    if c not in countries:
                        countries.append(c)
            regulars = [int(i) for i in rng.choice(len(pool), size=min(3, len(pool)), replace=False)]
            pages.append(_Page(wiki, page_id, title, namespace_id, is_redirect, target, created, countries,
                               regulars, revision_count=0 if created else int(rng.integers(1, 900))))
        return pages

    def title(self, namespace_id: int, pool: list[_User]) -> str:
        rng = self.rng
        if namespace_id in (2, 3):
            return self.pick(pool).user_text.replace(" ", "_")
        words = [self.pick(_NAMES), self.pick(_WORDS)] if rng.random() < 0.5 else [self.pick(_WORDS), self.pick(_NAMES)]
        if rng.random() < 0.3:
            words.append(self.pick(_QUALIFIERS))
        if rng.random() < 0.2:
            words = ["List", "of", words[1].lower() + "s", "in", self.pick(_NAMES)]
        return "_".join(words)

    def plan_changes(self, pages: list[_Page], edits_per_page: float, move_share: float,
                     delete_share: float) -> list[_Change]:
        """Each page's changes in the span: creation (or a first edit), bursts of edits, maybe a
        move, maybe a deletion at the end; all changes of all pages in time order."""
        rng = self.rng
        span = self.span_ms
        changes: list[_Change] = []
        for i, page in enumerate(pages):
            n = int(rng.geometric(1.0 / edits_per_page))
            t = int(rng.integers(0, int(span * (0.8 if page.created else 1.0))))
            times = [t]
            for _ in range(n - 1):
                if rng.random() < 0.7:  # the same editing session: minutes
                    gap = rng.lognormal(np.log(4 * 60_000), 1.2)
                else:  # someone comes back later
                    gap = rng.exponential(span / 3)
                t += max(2_000, int(gap))
                if t >= span:
                    break
                times.append(t)
            kinds = ["create" if page.created else "edit"]
            kinds += ["move" if rng.random() < move_share else "edit" for _ in times[1:]]
            if rng.random() < delete_share:
                t_del = times[-1] + max(2_000, int(rng.lognormal(np.log(30 * 60_000), 1.0)))
                if t_del < span:
                    times.append(t_del)
                    kinds.append("delete")
            for t, kind in zip(times, kinds):
                changes.append(_Change(t // 1000 * 1000, i, kind, 0))
        changes.sort(key=lambda c: (c.t_ms, c.page))
        # Whole seconds may collide within a page: keep each page's changes 1 s apart at least.
        last: dict[int, int] = {}
        for c in changes:
            if c.page in last and c.t_ms <= last[c.page]:
                c.t_ms = last[c.page] + 1000
            last[c.page] = c.t_ms
        changes.sort(key=lambda c: (c.t_ms, c.page))
        for seq, c in enumerate(changes):
            c.seq = seq
        return changes

    # -- MediaWiki --

    def next_rev_id(self, wiki: Wiki, t_ms: int) -> int:
        rev, last_t = self.rev_counter[wiki.wiki_id]
        rev += 1 + int(self.rng.poisson(wiki.edits_per_s * max(0, t_ms - last_t) / 1000))
        self.rev_counter[wiki.wiki_id] = (rev, t_ms)
        return rev

    def editor_for(self, page: _Page, kind: str) -> _User:
        pool = self.users[page.wiki.wiki_id]
        if kind == "delete":
            return pool[0]  # the sysop
        if self.rng.random() < 0.6:
            return pool[page.users[int(self.rng.integers(0, len(page.users)))]]
        return pool[int(self.rng.integers(0, len(pool)))]

    def page_change(self, page: _Page, change: _Change) -> _Post:
        rng = self.rng
        wiki = page.wiki
        kind = change.kind
        edit_ms = self.start_ms + change.t_ms
        user = self.editor_for(page, kind)
        prior_state: dict[str, Any] = {}
        if page.revision is None and not page.created:  # the page's revision before the span
            size = int(rng.lognormal(np.log(8_000), 1.0))
            old_rev = wiki.rev_base - int(rng.integers(1, 60_000_000))
            page.revision = self.revision(page, old_rev, old_rev - int(rng.integers(1, 5_000_000)),
                                          edit_ms - int(rng.integers(3_600, 5 * 365 * 86_400)) * 1000,
                                          size, self.pick(self.users[wiki.wiki_id]).snapshot(),
                                          self.pick(_EDIT_COMMENTS), bool(rng.random() < 0.3))
        if kind == "move":
            old_title = page.prefixed_title()
            page.title = f"{page.title}_({self.pick(_NAMES)})"
            prior_state["page"] = {"page_title": old_title}
        if kind == "delete":
            revision = page.revision
            comment = self.pick(_DELETE_COMMENTS)
        else:
            user.edit_count += 1
            previous = page.revision
            if kind == "create":
                size = int(rng.lognormal(np.log(2_500), 0.8)) if not page.is_redirect else int(rng.integers(20, 80))
                comment = self.pick(_CREATE_COMMENTS)
                if page.is_redirect:
                    comment = f"Redirected page to [[{page.redirect_target[1].replace('_', ' ')}]]"
                elif "{target}" in comment:
                    comment = "new article"
            elif kind == "move":
                size = previous["rev_size"]
                comment = f"{user.user_text} moved page [[{prior_state['page']['page_title'].replace('_', ' ')}]] " \
                          f"to [[{page.prefixed_title().replace('_', ' ')}]]"
            else:
                size = max(0, previous["rev_size"] + int(rng.normal(40, 400)))
                comment = self.pick(_EDIT_COMMENTS)
            rev_id = self.next_rev_id(wiki, change.t_ms)
            revision = self.revision(page, rev_id, previous["rev_id"] if previous else 0, edit_ms, size,
                                     user.snapshot(), comment, kind == "edit" and bool(rng.random() < 0.25),
                                     sha1=previous["rev_sha1"] if kind == "move" else None)
            if previous is not None:
                prior_state["revision"] = previous
            page.revision = revision
            page.revision_count += 1

        arrival = edit_ms - self.start_ms + max(20, int(rng.lognormal(np.log(800), 0.8)))
        arrival = max(arrival, page.last_arrival + 1)  # the stream is ordered per page
        page.last_arrival = arrival
        page_state: dict[str, Any] = {"page_id": page.page_id, "page_title": page.prefixed_title(),
                                      "namespace_id": page.namespace_id, "is_redirect": page.is_redirect}
        if page.is_redirect:
            page_state["redirect_page_link"] = {"page_id": page.redirect_target[0],
                                                "page_title": page.redirect_target[1],
                                                "namespace_id": 0, "is_redirect": False}
        if kind == "delete":
            page_state["revision_count"] = page.revision_count
        event: dict[str, Any] = {
            "$schema": PAGE_CHANGE_SCHEMA,
            "changelog_kind": {"create": "insert", "delete": "delete"}.get(kind, "update"),
            "page_change_kind": kind,
            "dt": iso_seconds(edit_ms),
            "wiki_id": wiki.wiki_id,
            "meta": {
                "stream": PAGE_CHANGE_STREAM,
                "uri": f"https://{wiki.domain}/wiki/{quote(page.prefixed_title())}",
                "id": self.uuid(),
                "domain": wiki.domain,
                "request_id": self.uuid(),
                "dt": iso_millis(self.start_ms + arrival),
            },
            "page": page_state,
            "performer": user.snapshot(),
            "revision": copy.deepcopy(revision),
            "comment": comment,
        }
        if prior_state:
            event["prior_state"] = copy.deepcopy(prior_state)
        return _Post(PAGE_CHANGE_STREAM, event, arrival, page.key, "page_change", None, self.next_seq())

    def revision(self, page: _Page, rev_id: int, parent: int, rev_ms: int, size: int, editor: dict[str, Any],
                 comment: str, minor: bool, sha1: str | None = None) -> dict[str, Any]:
        sha1 = sha1 or self.sha1()
        return {
            "rev_id": rev_id,
            "rev_dt": iso_seconds(rev_ms),
            "is_minor_edit": minor,
            "rev_sha1": sha1,
            "rev_size": size,
            "rev_parent_id": parent,
            "comment": comment,
            "is_content_visible": True,
            "is_editor_visible": True,
            "is_comment_visible": True,
            "editor": editor,
            "content_slots": {"main": {"slot_role": "main", "content_model": "wikitext",
                                       "content_sha1": sha1, "content_size": size,
                                       "content_format": "text/x-wiki", "origin_rev_id": rev_id}},
        }

    # -- EventGate --

    def maybe_break(self, post: _Post, share: float) -> None:
        """Break the event with a simulated bug, with probability `share` (one draw per event)."""
        u = self.rng.random()
        which = int(self.rng.integers(0, 1 << 30))
        if u < share:
            bugs = _BUGS[post.stream]
            name, apply = bugs[which % len(bugs)]
            post.event = copy.deepcopy(post.event)
            apply(post.event)
            post.bug = name

    def through_gate(self, gate: Any, posts: list[_Post]) -> tuple[set[int], dict[int, dict[str, Any]]]:
        """(seqs of the accepted posts, seq -> error event of each rejected one).

        Each post goes through EventGate alone, so every error event is tied to its post. The
        error event gets the post's time and a seeded id (the simulation's clock and randomness,
        not the machine's), which EventGate would set from its own.
        """
        accepted: set[int] = set()
        errors: dict[int, dict[str, Any]] = {}
        for post in posts:
            error_id = self.uuid()
            valid, rejected = gate.accept([post.event], post.stream)
            if valid:
                accepted.add(post.seq)
                continue
            (error,) = rejected
            error = dict(error)
            at = iso_millis(self.start_ms + post.at_ms)
            error["dt"] = at
            error["meta"] = {**error.get("meta", {}), "id": error_id, "dt": at}
            errors[post.seq] = error
        return accepted, errors

    # -- ChangeProp and the model server --

    def answer_delays(self, outcome_p: np.ndarray, dup_p: float, median_s: float,
                      sigma: float) -> tuple[str, list[int]]:
        """(outcome, delays in ms of each answer after the edit's arrival). A fixed number of draws."""
        rng = self.rng
        u, u_retry, u_dup = rng.random(3)
        latency = float(np.clip(rng.lognormal(np.log(median_s * 1000), sigma), 200, LATE_AFTER_MS - 5_000))
        retry_latency = float(np.clip(rng.lognormal(np.log(median_s * 1000), sigma), 200, 20_000))
        jitter = float(rng.uniform(0.9, 1.25))
        cum = np.cumsum(outcome_p)
        if u < cum[0]:
            return "lost", []
        if u < cum[1]:
            return "failed", []
        if u < cum[2]:
            retry_ms = (60_000 if u_retry < 0.7 else 360_000) * jitter  # ChangeProp's retries, ~1 and ~6 min
            outcome, first = "late", int(retry_ms + retry_latency)
        else:
            outcome, first = "on_time", int(latency)
        delays = [first]
        if u_dup < dup_p:  # a retry after a timeout whose first attempt had succeeded
            delays.append(first + int(60_000 * jitter + retry_latency))
        return outcome, delays

    def predict(self, page: _Page) -> dict[str, Any]:
        """The model's answer for this revision: the page's countries with scores."""
        rng = self.rng
        if page.countries and rng.random() < 0.05:  # the edit added content about another country
            extra = self.pick(_COUNTRIES)
            if extra not in page.countries:
                page.countries.append(extra)
        scores = {}
        for rank, country in enumerate(page.countries):
            base = 1.0 if rank == 0 else float(rng.uniform(0.15, 0.75))
            scores[country] = round(float(np.clip(base - rng.uniform(0, 0.1), 0.01, 1.0)), 3)
        ordered = sorted(scores, key=lambda c: -scores[c])
        return {"predictions": ordered, "probabilities": {c: scores[c] for c in ordered}}

    def model_events(self, edit: _Post, answer: dict[str, Any], at_ms: int) -> list[_Post]:
        """The prediction and the weighted tags event the model server posts for an edit."""
        source = edit.event
        meta = {"stream": PREDICTION_STREAM, "id": self.uuid(), "request_id": source["meta"]["request_id"],
                "domain": source["meta"]["domain"], "uri": source["meta"]["uri"],
                "dt": iso_millis(self.start_ms + at_ms)}
        prediction = {k: copy.deepcopy(v) for k, v in source.items() if k != "meta"}
        prediction["$schema"] = PREDICTION_SCHEMA
        prediction["meta"] = meta
        prediction["revision"].pop("content_slots", None)
        if "revision" in prediction.get("prior_state", {}):
            prediction["prior_state"]["revision"].pop("content_slots", None)
        prediction["predicted_classification"] = {
            "model_name": MODEL_NAME, "model_version": MODEL_VERSION,
            "predictions": list(answer["predictions"]), "probabilities": dict(answer["probabilities"]),
        }
        tags_at = at_ms + int(self.rng.integers(3, 60))
        tags = {
            "$schema": WEIGHTED_TAGS_SCHEMA,
            "dt": source["dt"],
            "meta": {**meta, "stream": WEIGHTED_TAGS_STREAM, "id": self.uuid(),
                     "dt": iso_millis(self.start_ms + tags_at)},
            "page": {"namespace_id": source["page"]["namespace_id"], "page_id": source["page"]["page_id"],
                     "page_title": source["page"]["page_title"]},
            "weighted_tags": {"set": {TAG_PREFIX: [{"tag": c, "score": s}
                                                   for c, s in answer["probabilities"].items()]}},
            "wiki_id": source["wiki_id"],
            "rev_based": True,
        }
        return [_Post(PREDICTION_STREAM, prediction, at_ms, edit.key, "prediction", None, self.next_seq()),
                _Post(WEIGHTED_TAGS_STREAM, tags, tags_at, edit.key, "weighted_tags", None, self.next_seq())]
