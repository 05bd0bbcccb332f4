"""Shipped timeline definitions: named, documented, installable with
`register-workflow --builtin NAME` (or POST /timelines with their fields).

The LiftWing lifecycle timelines follow a page (key `wiki_id,page.page_id`,
time `meta.dt`: when the event platform ingested the event) through
`mediawiki.page_change.v1` (edits) and a model server's prediction stream.
They use nothing special: nested fields (`meta.stream`,
`predicted_classification.predictions`), several sources meeting per key,
and the ordinary operators.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

PAGE_KEY = "wiki_id,page.page_id"
INGESTED = "meta.dt"
PAGE_CHANGE = "mediawiki.page_change.v1"
ARTICLE_COUNTRY = "mediawiki.article_country_prediction_change.v1"

# An edit LiftWing's article-country model answers (ChangeProp's rule): a create, edit or
# move of a namespace-0 page that is not a redirect, on a Wikipedia (not commons, wikidata,
# meta). A page is awaiting its prediction while its latest event is such an edit.
ELIGIBLE = ('latest_event_to_state(page.namespace_id) == 0 && latest_event_to_state(page.is_redirect) == false'
            ' && latest_event_to_state(page_change_kind) != "delete"'
            ' && latest_event_to_state(wiki_id) != "commonswiki" && latest_event_to_state(wiki_id) != "wikidatawiki"'
            ' && latest_event_to_state(wiki_id) != "metawiki"')
AWAITING = f'latest_event_to_state(meta.stream) == "{PAGE_CHANGE}" && {ELIGIBLE}'


class Definition(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    title: str
    answers: str
    expression: str
    sources: tuple[tuple[str, str, str, str], ...]   # (topic, key path(s), time path, schema title)
    idle_timeout_s: float = 7 * 86400
    shards: int = 4


SCHEMAS = {PAGE_CHANGE: "mediawiki/page/change",
           ARTICLE_COUNTRY: "mediawiki/page/prediction_classification_change"}


def _page_sources(*streams: str) -> tuple[tuple[str, str, str, str], ...]:
    return tuple((s, PAGE_KEY, INGESTED, SCHEMAS[s]) for s in streams)


CATALOG: dict[str, Definition] = {d.name: d for d in [
    Definition(
        name="prediction-wait",
        title="How long each page waited for its prediction after an edit",
        answers="A page is awaiting a prediction from an edit the model answers (namespace 0, no redirect, "
                "a Wikipedia) until the next prediction event for it; the value is the total time spent "
                "waiting (ms), growing while it waits.",
        expression=f"duration_where({AWAITING})",
        sources=_page_sources(PAGE_CHANGE, ARTICLE_COUNTRY),
    ),
    Definition(
        name="prediction-slo-breach",
        title="Pages waiting longer than the SLO (5 minutes) right now",
        answers="True while the page's latest event is an edit that has waited more than 5 minutes for a "
                "prediction (lost, failed or late predictions).",
        expression=f"{AWAITING} && duration_in_cur_state(latest_event_to_state(meta.stream)) > 5m",
        sources=_page_sources(PAGE_CHANGE, ARTICLE_COUNTRY),
    ),
    Definition(
        name="prediction-changed-24h",
        title="Whether a page's predicted class changed within the last 24 h",
        answers="True for 24 h after the page's predicted classes took a new value (the first prediction "
                "counts as a change); unknown before its first prediction.",
        expression="duration_in_cur_state(latest_event_to_state(predicted_classification.predictions)) < 24h",
        sources=_page_sources(ARTICLE_COUNTRY),
    ),
    Definition(
        name="time-with-prediction",
        title="How long each page has had its current prediction",
        answers="Milliseconds since the page's predicted classes last changed; unknown before its first "
                "prediction.",
        expression="duration_in_cur_state(latest_event_to_state(predicted_classification.predictions))",
        sources=_page_sources(ARTICLE_COUNTRY),
    ),
]}
