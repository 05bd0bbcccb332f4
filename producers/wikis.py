"""The simulated wikis and the event platform's names the lifecycle uses: streams, schemas, the model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
RECENT_MARGIN_MS = 10 * 60 * 1000

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

COUNTRIES: tuple[str, ...] = (
    "United States", "United Kingdom", "India", "Canada", "Australia", "Germany", "Austria", "Switzerland",
    "France", "Belgium", "Spain", "Mexico", "Argentina", "Colombia", "Chile", "Italy", "Japan", "China",
    "Brazil", "Russia", "Nigeria", "Kenya", "South Africa", "Egypt", "Turkey", "Iran", "Indonesia",
    "Philippines", "Poland", "Netherlands", "Sweden", "Norway", "Ireland", "New Zealand", "Pakistan",
    "Bangladesh", "Vietnam", "South Korea", "Ukraine", "Greece",
)

WORDS: tuple[str, ...] = (
    "River", "Lake", "Mount", "Saint", "North", "South", "Castle", "Battle", "Church", "Station", "Bridge",
    "Island", "Valley", "Harbour", "Museum", "College", "Railway", "Festival", "Market", "Cathedral",
    "Forest", "Abbey", "Tower", "Park", "Palace", "Theatre", "Airport", "Canal", "Monastery", "Square",
)
NAMES: tuple[str, ...] = (
    "Alden", "Brava", "Corvin", "Delmar", "Esk", "Farrow", "Galen", "Hollis", "Ivra", "Jorvik", "Kestrel",
    "Lorne", "Marden", "Nessa", "Orrin", "Pell", "Quarry", "Rhosyn", "Selby", "Tarn", "Ulla", "Varde",
    "Wren", "Yarrow", "Zell", "Amalfi", "Bexley", "Caddo", "Dunmore", "Elgin", "Fenwick", "Gorse",
)
QUALIFIERS: tuple[str, ...] = (
    "(band)", "(film)", "(1987 film)", "(novel)", "(footballer)", "(river)", "(album)", "(village)",
    "(politician)", "(ship)",
)
EDIT_COMMENTS: tuple[str, ...] = (
    "copyedit", "link", "/* History */ expanded", "Added citation", "Reverted edits by vandal",
    "/* Early life */ fix typo", "Updated infobox", "rm unsourced claim", "Added category", "ce",
    "/* References */", "Undid revision", "clean up, typo(s) fixed", "Adding short description",
)
CREATE_COMMENTS: tuple[str, ...] = (
    "Created page with '{{Short description}}'", "new article", "Created by translating the page",
    "stub", "Redirected page to [[{target}]]",
)
DELETE_COMMENTS: tuple[str, ...] = (
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


BUGS: dict[str, tuple[tuple[str, Callable[[dict[str, Any]], None]], ...]] = {
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
