"""How the lifecycle simulation builds each event: users, pages, changes, and the model server's answers."""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import numpy as np

from timeline.producers.wikis import (
    BUGS,
    COUNTRIES,
    CREATE_COMMENTS,
    DELETE_COMMENTS,
    EDIT_COMMENTS,
    LATE_AFTER_MS,
    MODEL_NAME,
    MODEL_VERSION,
    NAMES,
    PAGE_CHANGE_SCHEMA,
    PAGE_CHANGE_STREAM,
    PREDICTION_SCHEMA,
    PREDICTION_STREAM,
    QUALIFIERS,
    TAG_PREFIX,
    WEIGHTED_TAGS_SCHEMA,
    WEIGHTED_TAGS_STREAM,
    WIKIS,
    WORDS,
    Wiki,
)
from timeline.sources.eventplatform import STREAMS

# --- the simulation --------------------------------------------------------------------------


@dataclass
class User:
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
class Page:
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
class Change:
    t_ms: int  # offset of the change from the start, whole seconds
    page: int
    kind: str  # create / edit / move / delete
    seq: int


@dataclass
class Post:
    """An event posted to EventGate at `at_ms` (offset from the start)."""

    stream: str
    event: dict[str, Any]
    at_ms: int
    key: str
    kind: str
    bug: str | None
    seq: int = 0


# --- helpers ---------------------------------------------------------------------------------


def check_shares(**shares: float) -> None:
    for name, value in shares.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be a fraction between 0 and 1, got {value!r}")


def eligible(page: Page, change: Change) -> bool:
    """ChangeProp's article-country rule: edits, creates and moves of namespace-0 non-redirect
    pages of a Wikipedia."""
    return (change.kind in ("create", "edit", "move") and page.namespace_id == 0 and not page.is_redirect
            and page.wiki.is_wikipedia)


def topic_of(stream: str) -> str:
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


class Simulation:
    def __init__(self, rng: np.random.Generator, start_ms: int, span_ms: int):
        self.rng = rng
        self.start_ms = start_ms
        self.span_ms = span_ms
        self.users: dict[str, list[User]] = {}
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

    def user_pool(self, wiki: Wiki, size: int) -> list[User]:
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
                pool.append(User(next_id, text, ["*", "temp"], False, True, iso_seconds(reg // 1000 * 1000),
                                  int(rng.integers(0, 30))))
                continue
            name = f"{self.pick(NAMES)}{self.pick(WORDS)}{int(rng.integers(1, 999)) if rng.random() < 0.4 else ''}"
            groups = ["*", "user", "autoconfirmed"]
            if kind == "bot":
                name, groups = f"{name}Bot", ["bot", *groups]
            elif kind == "sysop":
                groups = ["sysop", *groups]
            elif rng.random() < 0.3:
                groups = ["extendedconfirmed", *groups]
            edits = int(rng.lognormal(np.log(2_000 if kind != "user" else 300), 1.5))
            pool.append(User(next_id, name, groups, kind == "bot", False, iso_seconds(reg // 1000 * 1000), edits))
        self.users[wiki.wiki_id] = pool
        return pool

    def plan_pages(self, n: int, non_article_share: float, redirect_share: float, create_share: float,
                   no_country_share: float) -> list[Page]:
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
                        self.pick(COUNTRIES)
                    if c not in countries:
                        countries.append(c)
            regulars = [int(i) for i in rng.choice(len(pool), size=min(3, len(pool)), replace=False)]
            pages.append(Page(wiki, page_id, title, namespace_id, is_redirect, target, created, countries,
                               regulars, revision_count=0 if created else int(rng.integers(1, 900))))
        return pages

    def title(self, namespace_id: int, pool: list[User]) -> str:
        rng = self.rng
        if namespace_id in (2, 3):
            return self.pick(pool).user_text.replace(" ", "_")
        words = [self.pick(NAMES), self.pick(WORDS)] if rng.random() < 0.5 else [self.pick(WORDS), self.pick(NAMES)]
        if rng.random() < 0.3:
            words.append(self.pick(QUALIFIERS))
        if rng.random() < 0.2:
            words = ["List", "of", words[1].lower() + "s", "in", self.pick(NAMES)]
        return "_".join(words)

    def plan_changes(self, pages: list[Page], edits_per_page: float, move_share: float,
                     delete_share: float) -> list[Change]:
        """Each page's changes in the span: creation (or a first edit), bursts of edits, maybe a
        move, maybe a deletion at the end; all changes of all pages in time order."""
        rng = self.rng
        span = self.span_ms
        changes: list[Change] = []
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
                changes.append(Change(t // 1000 * 1000, i, kind, 0))
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

    def editor_for(self, page: Page, kind: str) -> User:
        pool = self.users[page.wiki.wiki_id]
        if kind == "delete":
            return pool[0]  # the sysop
        if self.rng.random() < 0.6:
            return pool[page.users[int(self.rng.integers(0, len(page.users)))]]
        return pool[int(self.rng.integers(0, len(pool)))]

    def page_change(self, page: Page, change: Change) -> Post:
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
                                          self.pick(EDIT_COMMENTS), bool(rng.random() < 0.3))
        if kind == "move":
            old_title = page.prefixed_title()
            page.title = f"{page.title}_({self.pick(NAMES)})"
            prior_state["page"] = {"page_title": old_title}
        if kind == "delete":
            revision = page.revision
            comment = self.pick(DELETE_COMMENTS)
        else:
            user.edit_count += 1
            previous = page.revision
            if kind == "create":
                size = int(rng.lognormal(np.log(2_500), 0.8)) if not page.is_redirect else int(rng.integers(20, 80))
                comment = self.pick(CREATE_COMMENTS)
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
                comment = self.pick(EDIT_COMMENTS)
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
        return Post(PAGE_CHANGE_STREAM, event, arrival, page.key, "page_change", None, self.next_seq())

    def revision(self, page: Page, rev_id: int, parent: int, rev_ms: int, size: int, editor: dict[str, Any],
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

    def maybe_break(self, post: Post, share: float) -> None:
        """Break the event with a simulated bug, with probability `share` (one draw per event)."""
        u = self.rng.random()
        which = int(self.rng.integers(0, 1 << 30))
        if u < share:
            bugs = BUGS[post.stream]
            name, apply = bugs[which % len(bugs)]
            post.event = copy.deepcopy(post.event)
            apply(post.event)
            post.bug = name

    def through_gate(self, gate: Any, posts: list[Post]) -> tuple[set[int], dict[int, dict[str, Any]]]:
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

    def predict(self, page: Page) -> dict[str, Any]:
        """The model's answer for this revision: the page's countries with scores."""
        rng = self.rng
        if page.countries and rng.random() < 0.05:  # the edit added content about another country
            extra = self.pick(COUNTRIES)
            if extra not in page.countries:
                page.countries.append(extra)
        scores = {}
        for rank, country in enumerate(page.countries):
            base = 1.0 if rank == 0 else float(rng.uniform(0.15, 0.75))
            scores[country] = round(float(np.clip(base - rng.uniform(0, 0.1), 0.01, 1.0)), 3)
        ordered = sorted(scores, key=lambda c: -scores[c])
        return {"predictions": ordered, "probabilities": {c: scores[c] for c in ordered}}

    def model_events(self, edit: Post, answer: dict[str, Any], at_ms: int) -> list[Post]:
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
        return [Post(PREDICTION_STREAM, prediction, at_ms, edit.key, "prediction", None, self.next_seq()),
                Post(WEIGHTED_TAGS_STREAM, tags, tags_at, edit.key, "weighted_tags", None, self.next_seq())]
