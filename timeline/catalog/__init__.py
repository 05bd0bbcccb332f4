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

from timeline.dsl.limits import MAX_ALLOWED_LATENESS_S

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


# --- per revision (issue 13 item 4) -----------------------------------------------------------
# Wikimedia joins an edit to its prediction by (wiki_id, revision.rev_id): a prediction answers
# the revision it names, not the page's latest edit. Two ways to follow that:
#   per revision: key wiki_id,revision.rev_id; a revision waits from its edit until a prediction
#     for it (or its page is deleted);
#   per page: the page is waiting while the revision of its latest edit differs from the revision
#     of its latest prediction (two timelines compared), so a late or duplicate prediction for an
#     older revision does not end the wait of a newer edit.
REVISION_KEY = "wiki_id,revision.rev_id"
IS_EDIT = f'meta.stream == "{PAGE_CHANGE}"'
IS_PREDICTION = f'meta.stream == "{ARTICLE_COUNTRY}"'
# One event: an edit (create, edit, move, ...) LiftWing's article-country model answers.
ANSWERED_EDIT = (f'{IS_EDIT} && page.namespace_id == 0 && page.is_redirect == false && page_change_kind != "delete"'
                 ' && wiki_id != "commonswiki" && wiki_id != "wikidatawiki" && wiki_id != "metawiki"')
REVISION_AWAITING = (f"has_existed({ANSWERED_EDIT}) && !has_existed({IS_PREDICTION})"
                     f' && !has_existed({IS_EDIT} && page_change_kind == "delete")')


def _of_edits(field: str) -> str:
    return f"latest_event_to_state({field}, {IS_EDIT})"


EDITED_REVISION = _of_edits("revision.rev_id")
PREDICTED_REVISION = f"latest_event_to_state(revision.rev_id, {IS_PREDICTION})"
# The page's latest edit is one the model answers, and no prediction names its revision yet.
LATEST_EDIT_ANSWERED_BY_MODEL = (
    f'{_of_edits("page.namespace_id")} == 0 && {_of_edits("page.is_redirect")} == false'
    f' && {_of_edits("page_change_kind")} != "delete"'
    ' && latest_event_to_state(wiki_id) != "commonswiki" && latest_event_to_state(wiki_id) != "wikidatawiki"'
    ' && latest_event_to_state(wiki_id) != "metawiki"')
PAGE_AWAITING_REVISION = (f"{LATEST_EDIT_ANSWERED_BY_MODEL}"
                          f" && ({EDITED_REVISION} != {PREDICTED_REVISION} || !has_existed({IS_PREDICTION}))")


class Definition(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    title: str
    answers: str
    expression: str
    sources: tuple[tuple[str, str, str, str], ...]   # (topic, key path(s), time path, schema title)
    idle_timeout_s: float = 7 * 86400
    # Wikimedia's streams reach consumers minutes to hours late (mirroring, retries, a
    # model server's backlog): these timelines apply events up to a day behind their key.
    allowed_lateness_s: float = MAX_ALLOWED_LATENESS_S
    shards: int = 4


SCHEMAS = {PAGE_CHANGE: "mediawiki/page/change",
           ARTICLE_COUNTRY: "mediawiki/page/prediction_classification_change"}


def _page_sources(*streams: str) -> tuple[tuple[str, str, str, str], ...]:
    return tuple((s, PAGE_KEY, INGESTED, SCHEMAS[s]) for s in streams)


def _revision_sources(*streams: str) -> tuple[tuple[str, str, str, str], ...]:
    return tuple((s, REVISION_KEY, INGESTED, SCHEMAS[s]) for s in streams)


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
    Definition(
        name="revision-wait",
        title="How long each revision waited for its own prediction",
        answers="Per revision (key wiki_id:rev_id): from the edit that created it, if the model answers it "
                "(namespace 0, no redirect, a Wikipedia), until a prediction for that revision (or the page's "
                "deletion); the value is the time waited (ms), growing while it waits.",
        expression=f"duration_where({REVISION_AWAITING})",
        sources=_revision_sources(PAGE_CHANGE, ARTICLE_COUNTRY),
    ),
    Definition(
        name="revision-slo-breach",
        title="Revisions waiting longer than the SLO (5 minutes) for their prediction right now",
        answers="Per revision: true while the revision still waits for its prediction and has waited more "
                "than 5 minutes.",
        expression=f"({REVISION_AWAITING}) && duration_where({REVISION_AWAITING}) > 5m",
        sources=_revision_sources(PAGE_CHANGE, ARTICLE_COUNTRY),
    ),
    Definition(
        name="page-revision-wait",
        title="How long each page waited for the prediction of its latest edited revision",
        answers="A page waits while its latest edit is one the model answers and the revision of its latest "
                "prediction is not the revision of its latest edit; the value is the total time waited (ms). "
                "A late or duplicate prediction for an older revision does not end the wait of a newer edit.",
        expression=f"duration_where({PAGE_AWAITING_REVISION})",
        sources=_page_sources(PAGE_CHANGE, ARTICLE_COUNTRY),
    ),
    Definition(
        name="page-slo-breach",
        title="Pages whose latest edit has waited longer than the SLO (5 minutes) for its own prediction",
        answers="True while the page waits for the prediction of its latest edited revision (as in "
                "page-revision-wait) and that revision was edited more than 5 minutes ago.",
        expression=f"({PAGE_AWAITING_REVISION}) && duration_in_cur_state({EDITED_REVISION}) > 5m",
        sources=_page_sources(PAGE_CHANGE, ARTICLE_COUNTRY),
    ),
]}
