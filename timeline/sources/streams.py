"""Event platform streams: their schemas, Pulsar topics, and how a page key and a time are read."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from timeline.dsl.errors import EventError, UsageError
from timeline.dsl.events import MISSING, get_path, parse_key, parse_time
from timeline.sources.schemas import ERROR_STREAM, kind_of, parse_schema_uri, short_repr

# --- streams --------------------------------------------------------------------------------------

PULSAR_TENANT = "public"
PULSAR_NAMESPACE = "default"
# Pulsar's rule for a topic's local name (NamedEntity): letters, digits, _ - = : .
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9_\-=:.]+$")


def topic_for(stream: str, tenant: str = PULSAR_TENANT, namespace: str = PULSAR_NAMESPACE) -> str:
    """The Pulsar topic of a stream: the stream name is the topic's local name.

    `mediawiki.page_change.v1` -> `persistent://public/default/mediawiki.page_change.v1`.
    Kafka's datacenter prefix (`eqiad.`, `codfw.`) is not part of a stream's name and
    is not added: one topic holds the stream. Dots and dashes are allowed in Pulsar
    topic names (checked against a real pulsar-lite broker in the integration tests).
    """
    if not isinstance(stream, str) or not _TOPIC_NAME.match(stream):
        raise UsageError(f"{stream!r} cannot be a Pulsar topic name: use letters, digits and _ - = : .")
    return f"persistent://{tenant}/{namespace}/{stream}"


@dataclass(frozen=True)
class StreamSpec:
    """A stream of the event platform as the project reads it."""

    name: str
    schema_title: str
    wiki_field: str | None          # dotted path of the wiki (a page is (wiki, page id)); None: no page
    page_id_field: str | None
    time_field: str = "meta.dt"     # when the event was produced; `dt` is the edit's time
    ordered_per_page: bool = False  # the upstream Kafka topic is keyed by page
    description: str = ""

    @property
    def topic(self) -> str:
        return topic_for(self.name)

    @property
    def has_page(self) -> bool:
        return self.wiki_field is not None and self.page_id_field is not None


def _page_stream(name: str, title: str, description: str, ordered: bool = False) -> StreamSpec:
    return StreamSpec(name, title, "wiki_id", "page.page_id", ordered_per_page=ordered, description=description)


_PREDICTION = "mediawiki/page/prediction_classification_change"

STREAMS: dict[str, StreamSpec] = {s.name: s for s in [
    _page_stream("mediawiki.page_change.v1", "mediawiki/page/change",
                 "every change to a page: edits, creates, moves, deletes, undeletes, visibility", ordered=True),
    _page_stream("mediawiki.article_country_prediction_change.v1", _PREDICTION,
                 "LiftWing article-country predictions (not public)"),
    _page_stream("mediawiki.page_prediction_change.rc0", _PREDICTION,
                 "LiftWing predictions, staging stream"),
    _page_stream("mediawiki.page_revert_risk_prediction_change.v1", _PREDICTION,
                 "LiftWing revert-risk predictions (public on EventStreams)"),
    _page_stream("mediawiki.cirrussearch.page_weighted_tags_change.rc0",
                 "development/cirrussearch/page_weighted_tags_change",
                 "search weighted tags set / cleared per page (e.g. classification.prediction.articlecountry)"),
    StreamSpec("mediawiki.revision-create", "mediawiki/revision/create", "database", "page_id",
               description="old flow: a new revision (feeds ORES precaching)"),
    StreamSpec("mediawiki.revision-score", "mediawiki/revision/score", "database", "page_id",
               description="old flow: ORES scores of a revision"),
    StreamSpec(ERROR_STREAM, "error", None, None,
               description="events EventGate rejected, with the validator's message (no page)"),
]}

_BY_TITLE: dict[str, StreamSpec] = {}
for _spec in STREAMS.values():
    _BY_TITLE.setdefault(_spec.schema_title, _spec)


def schema_title_of(event: dict) -> str | None:
    uri = event.get("$schema")
    try:
        return parse_schema_uri(uri)[0] if isinstance(uri, str) else None
    except ValueError:
        return None


def _spec_for(event: dict, stream: StreamSpec | str | None) -> StreamSpec | None:
    if isinstance(stream, StreamSpec):
        return stream
    if isinstance(stream, str):
        return STREAMS.get(stream)
    spec = _BY_TITLE.get(schema_title_of(event) or "")
    if spec is not None:
        return spec
    meta = event.get("meta")
    return STREAMS.get(meta.get("stream")) if isinstance(meta, dict) else None


def page_key(event: Any, stream: StreamSpec | str | None = None) -> str:
    """`"<wiki>:<page id>"`: `wiki_id` and `page.page_id`, or for the old revision-* streams
    `database` and `page_id`. The fields are those of the stream (given, else found from the
    event's schema title, else its `meta.stream`, else whichever layout the event has).
    Raises EventError with the reason when there is no usable key."""
    if not isinstance(event, dict):
        raise EventError(f"not a JSON object: {kind_of(event)}")
    spec = _spec_for(event, stream)
    if spec is not None:
        if not spec.has_page:
            raise EventError(f"no usable key: events of {spec.name} ({spec.schema_title}) are not about a page")
        wiki_field, page_field = spec.wiki_field, spec.page_id_field
    elif "wiki_id" in event:
        wiki_field, page_field = "wiki_id", "page.page_id"
    elif "database" in event:
        wiki_field, page_field = "database", "page_id"
    else:
        raise EventError("no usable key: neither 'wiki_id' nor 'database' (and the stream is not known)")
    assert wiki_field is not None and page_field is not None
    wiki = get_path(event, wiki_field.split("."))
    if wiki is not MISSING and not isinstance(wiki, str):
        raise EventError(f"key at '{wiki_field}' must be a string, got {kind_of(wiki)}")
    wiki = parse_key(wiki, wiki_field)
    page_id = get_path(event, page_field.split("."))
    if isinstance(page_id, str) and page_id.isdigit():
        page_id = int(page_id)
    if page_id is MISSING or page_id is None:
        raise EventError(f"no key at '{page_field}'")
    if isinstance(page_id, bool) or not isinstance(page_id, int):
        raise EventError(f"key at '{page_field}' must be an integer page id, got {short_repr(page_id)}")
    return f"{wiki}:{page_id}"


def event_time_ms(event: Any) -> int:
    """`meta.dt` (ISO-8601, when the event was produced) in epoch ms; EventError if unusable.

    Not `dt`: in a prediction that is the edit's time, copied from the page_change event.
    """
    if not isinstance(event, dict):
        raise EventError(f"not a JSON object: {kind_of(event)}")
    return parse_time(get_path(event, ("meta", "dt")), "meta.dt")


def is_canary(event: Any) -> bool:
    """Synthetic monitoring events (`meta.domain == "canary"`): consumers drop them."""
    meta = event.get("meta") if isinstance(event, dict) else None
    return isinstance(meta, dict) and meta.get("domain") == "canary"
