"""The Wikimedia event platform, as a consumer sees it: schemas, streams, keys, times, EventGate.

Pure: no Pulsar, no HTTP. The schemas are a copy kept in `sources/schemas/` (see its
PROVENANCE.md), so nothing outside the package is read at run time.

Schemas
    A schema is named by a URI such as `/mediawiki/page/change/1.2.0`: its *title*
    (`mediawiki/page/change`, a folder of the repository) and a version (a file in it).
    The repository keeps each version materialised (`1.2.0` and `1.2.0.yaml`: every
    `$ref` already inlined, what EventGate validates against) and, for the newest
    version, the unresolved source `current.yaml` (with `$ref`s to `/fragment/...`
    versions). `SchemaRepository(sources=True)` validates with those sources
    instead, resolving every `$ref` through the repository with `referencing`; its
    verdicts equal the materialised ones (tested), which proves the resolution.

Validation (`validate`)
    The event's `$schema` names the schema; it is matched by title, and the version
    named is used if the repository has it, else the newest (production producers are
    ahead of these files). JSON Schema draft-07 with two adjustments for real
    traffic: `additionalProperties: false` is dropped at every level (events carry
    fields newer than these schemas), and of the string formats only `date-time` is
    checked (it is every stream's time). Each problem is one message,
    `<JSON path>: <the validator's message>`, like EventGate's.

Streams (`STREAMS`)
    Each stream the project reads, with its schema title, its Pulsar topic, how its
    page key and its time are read. See `topic_for` for the topic names.
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin

import yaml
from jsonschema import Draft7Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT7

from dsl.errors import EventError, TimelineError, UsageError
from dsl.events import MISSING, get_path, parse_key, parse_time

__all__ = [
    "DEFAULT_ROOT",
    "ERROR_SCHEMA_URI",
    "ERROR_STREAM",
    "EventGate",
    "SchemaNotFound",
    "SchemaRef",
    "SchemaRepository",
    "STREAMS",
    "StreamSpec",
    "default_repository",
    "event_time_ms",
    "is_canary",
    "page_key",
    "parse_schema_uri",
    "topic_for",
    "validate",
]

DEFAULT_ROOT = Path(__file__).resolve().with_name("schemas")
ERROR_STREAM = "eventgate-main.error.validation"
ERROR_SCHEMA_URI = "/error/2.1.0"

_VERSION = re.compile(r"^\d+\.\d+\.\d+$")
_SUFFIXES = ("", ".yaml", ".json")  # how a version's file may be named, in lookup order
_MAX_MESSAGE = 300


class SchemaNotFound(TimelineError):
    """A schema, or a `$ref` fragment of one, is not in the repository."""

    def __init__(self, uri: str, looked_in: Iterable[Path | str], referenced_from: str | None = None,
                 detail: str | None = None):
        self.uri = uri
        self.looked_in = [str(p) for p in looked_in]
        self.referenced_from = referenced_from
        self.detail = detail
        text = f"schema {uri!r} not found"
        if referenced_from:
            text = f"$ref {uri!r} (from {referenced_from}) not found"
        if detail:
            text += f": {detail}"
        if self.looked_in:
            text += f"; looked in {', '.join(self.looked_in)}"
        super().__init__(text)


@dataclass(frozen=True)
class SchemaRef:
    """Which schema an event's `$schema` resolved to."""

    requested: str          # the `$schema` as written
    title: str
    version: str            # the version used
    exact: bool             # False: the version named is not here (or none was), the newest is used

    @property
    def uri(self) -> str:
        return f"/{self.title}/{self.version}"


def parse_schema_uri(uri: str) -> tuple[str, str | None]:
    """`/mediawiki/page/change/1.2.0[.yaml|.json]` -> (`mediawiki/page/change`, `1.2.0`).

    No version (or `latest`) gives None. Only relative URIs, as EventGate accepts.
    Raises ValueError for something that is not such a URI.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError(f"{uri!r} is not a schema URI")
    path = urldefrag(uri.strip())[0]
    if "://" in path or path.startswith("//"):
        raise ValueError(f"{uri!r} is absolute; only relative schema URIs like /mediawiki/page/change/1.2.0 "
                         "are looked up")
    path = path.strip("/")
    for suffix in (".yaml", ".json"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    head, _, last = path.rpartition("/")
    if head and (_VERSION.match(last) or last == "latest"):
        return head, None if last == "latest" else last
    if not path:
        raise ValueError(f"{uri!r} names no schema")
    return path, None


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


# --- loading and preparing documents --------------------------------------------------------------

class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML without implicit timestamps: `2021-01-01T00:00:00Z` stays a string, as in JSON."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _read(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


# Keywords whose value is a schema, a list of schemas, or a map of name -> schema (draft-07).
_ONE_SCHEMA = {"additionalItems", "additionalProperties", "contains", "else", "if", "items", "not",
               "propertyNames", "then"}
_SCHEMA_LIST = {"allOf", "anyOf", "oneOf", "items"}
_SCHEMA_MAP = {"definitions", "dependencies", "patternProperties", "properties"}


def _prepare(node: Any, refs: list[str]) -> Any:
    """A schema copied for validation of real traffic, its `$ref`s collected into `refs`.

    - `additionalProperties: false` is dropped (unknown fields are accepted);
    - a `$ref` with sibling keywords becomes `allOf: [{$ref}]` next to them: the
      sources are written for jsonschema-tools, which merges the target with the
      siblings (draft-07 itself would ignore the siblings);
    - `./#/...` (jsonschema-tools' "this file") becomes `#/...`.
    Data keywords (`examples`, `enum`, `const`, `default`) are copied as they are.
    """
    if not isinstance(node, dict):
        return copy.deepcopy(node)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "additionalProperties" and value is False:
            continue
        if key in _SCHEMA_MAP and isinstance(value, dict):
            out[key] = {name: _prepare(sub, refs) if isinstance(sub, dict) else copy.deepcopy(sub)
                        for name, sub in value.items()}
        elif key in _SCHEMA_LIST and isinstance(value, list):
            out[key] = [_prepare(sub, refs) for sub in value]
        elif key in _ONE_SCHEMA and isinstance(value, dict):
            out[key] = _prepare(value, refs)
        elif key == "$ref" and isinstance(value, str):
            ref = "#" + value[3:] if value.startswith("./#") else value
            out[key] = ref
            refs.append(ref)
        else:
            out[key] = copy.deepcopy(value)
    ref = out.get("$ref")
    if isinstance(ref, str) and len(out) > 1:
        siblings = {k: v for k, v in out.items() if k != "$ref"}
        siblings["allOf"] = [{"$ref": ref}, *siblings.get("allOf", [])]
        out = siblings
    return out


def _pointer(document: Any, fragment: str) -> bool:
    """Does the JSON pointer `fragment` (without '#') lead somewhere in `document`?"""
    if fragment in ("", "/"):
        return True
    if not fragment.startswith("/"):
        return False  # a plain-name anchor: draft-07 `$id: '#name'`, not used by these schemas
    node = document
    for part in fragment[1:].split("/"):
        part = unquote(part).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


_DATE_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))")


def _check_date_time(value: object) -> bool:
    """RFC 3339 `date-time` (the format of every `dt` field); non-strings are the type's business."""
    if not isinstance(value, str):
        return True
    match = _DATE_TIME.fullmatch(value)
    if match is None:
        return False
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    offset_h, offset_m = (int(g) if g else 0 for g in match.groups()[6:])
    try:
        _dt.datetime(year, month, day, hour, minute, min(second, 59))  # RFC 3339 allows a leap second
    except ValueError:
        return False
    return second <= 60 and offset_h < 24 and offset_m < 60


_FORMATS = FormatChecker(formats=())
_FORMATS.checks("date-time")(_check_date_time)


# --- the repository -------------------------------------------------------------------------------

class SchemaRepository:
    """Schemas by URI from a folder laid out like schemas-event-primary's `jsonschema/`.

    `sources=True`: a version whose title has a `current.yaml` declaring that version
    (`$id`) is read from that unresolved source, so its `$ref`s are resolved here.
    """

    def __init__(self, root: Path | str | None = None, *, sources: bool = False):
        self.root = Path(root) if root is not None else DEFAULT_ROOT
        self.sources = sources
        self._docs: dict[str, dict] = {}          # canonical URI -> prepared document
        self._aliases: dict[str, str] = {}        # URI as referenced -> canonical URI
        self._validators: dict[str, Draft7Validator] = {}
        self._versions: dict[str, list[str]] = {}  # the files are read once: no I/O per event
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"SchemaRepository({str(self.root)!r}{', sources=True' if self.sources else ''})"

    # --- what is here -------------------------------------------------------------------------
    def versions(self, title: str) -> list[str]:
        """The versions of a title, oldest first ([] for an unknown title)."""
        cached = self._versions.get(title)
        if cached is None:
            cached = self._scan_versions(title)
            if cached:  # not unknown titles: events could name endlessly many
                self._versions[title] = cached
        return list(cached)

    def _scan_versions(self, title: str) -> list[str]:
        folder = self.root / title
        if not title or ".." in Path(title).parts or not folder.is_dir():
            return []
        found = set()
        for child in folder.iterdir():
            name = child.name
            for suffix in (".yaml", ".json"):
                name = name.removesuffix(suffix)
            if child.is_file() and _VERSION.match(name):
                found.add(name)
        return sorted(found, key=_version_key)

    def titles(self) -> list[str]:
        """Every title (a folder with at least one version), fragments included."""
        out = []
        for folder in sorted(p for p in self.root.rglob("*") if p.is_dir()):
            title = folder.relative_to(self.root).as_posix()
            if self.versions(title):
                out.append(title)
        return out

    def resolve(self, uri: str) -> SchemaRef:
        """The schema for an event's `$schema`: by title; the version named if here, else the newest."""
        try:
            title, version = parse_schema_uri(uri)
        except ValueError as exc:
            raise SchemaNotFound(str(uri), [], detail=str(exc)) from None
        versions = self.versions(title)
        if not versions:
            raise SchemaNotFound(uri, [self.root / title], detail=f"no schema titled {title!r} here")
        if version in versions:
            return SchemaRef(uri, title, version, exact=True)
        return SchemaRef(uri, title, versions[-1], exact=False)

    # --- documents ------------------------------------------------------------------------------
    def _locate(self, title: str, version: str) -> tuple[Path | None, list[Path]]:
        looked: list[Path] = []
        folder = self.root / title
        if self.sources:
            source = folder / "current.yaml"
            looked.append(source)
            if source.is_file():
                declared = (_read(source) or {}).get("$id")
                if isinstance(declared, str) and declared.strip("/") == f"{title}/{version}":
                    return source, looked
        for suffix in _SUFFIXES:
            path = folder / f"{version}{suffix}"
            looked.append(path)
            if path.is_file():
                return path, looked
        return None, looked

    def document(self, uri: str, *, referenced_from: str | None = None) -> dict:
        """The prepared schema at an exact URI (`/title/X.Y.Z`), every `$ref` in it checked.

        Raises SchemaNotFound for a missing schema, or a `$ref` (to another schema or
        to a part of one) that leads nowhere.
        """
        with self._lock:
            canonical = self._aliases.get(uri)
            if canonical is not None:
                return self._docs[canonical]
            try:
                title, version = parse_schema_uri(uri)
            except ValueError as exc:
                raise SchemaNotFound(uri, [], referenced_from, str(exc)) from None
            if version is None:
                raise SchemaNotFound(uri, [self.root / title], referenced_from,
                                     "a $ref must name a version, like /fragment/common/2.0.0")
            canonical = f"/{title}/{version}"
            if canonical not in self._docs:
                path, looked = self._locate(title, version)
                if path is None:
                    raise SchemaNotFound(uri, looked, referenced_from)
                raw = _read(path)
                if not isinstance(raw, dict):
                    raise SchemaNotFound(uri, [path], referenced_from, "the file is not a JSON Schema object")
                refs: list[str] = []
                doc = _prepare(raw, refs)
                doc["$id"] = canonical
                self._docs[canonical] = doc     # before following refs: a cycle ends here
                try:
                    for ref in refs:
                        self._follow(canonical, doc, ref)
                except SchemaNotFound:
                    del self._docs[canonical]
                    raise
            self._aliases[uri] = canonical
            return self._docs[canonical]

    def _follow(self, base: str, doc: dict, ref: str) -> None:
        target, fragment = urldefrag(urljoin(base, ref))
        where = f"{base}"
        if not target or target == base:
            if not _pointer(doc, fragment):
                raise SchemaNotFound(ref, [], where, f"no {fragment!r} in {base}")
            return
        target_doc = self.document(target, referenced_from=where)
        if not _pointer(target_doc, fragment):
            raise SchemaNotFound(ref, [target], where, f"no {fragment!r} in {target}")

    def _registry(self) -> Registry:
        resources = [(uri, DRAFT7.create_resource(doc)) for uri, doc in self._docs.items()]
        resources += [(alias, DRAFT7.create_resource(self._docs[c])) for alias, c in self._aliases.items()
                      if alias != c]
        return Registry(retrieve=self._retrieve).with_resources(resources)  # type: ignore[call-arg]

    def _retrieve(self, uri: str):
        try:
            return DRAFT7.create_resource(self.document(uri))
        except SchemaNotFound as exc:
            raise NoSuchResource(ref=uri) from exc

    def validator(self, uri: str) -> Draft7Validator:
        """A draft-07 validator for the exact schema `uri` (no version fallback)."""
        with self._lock:
            found = self._validators.get(uri)
            if found is None:
                doc = self.document(uri)
                found = Draft7Validator(doc, registry=self._registry(), format_checker=_FORMATS)
                self._validators[uri] = found
            return found

    # --- validation -----------------------------------------------------------------------------
    def validate(self, event: Any) -> list[str]:
        """Problems with `event` (empty: valid), each `<JSON path>: <message>`.

        An unknown or missing `$schema` is a problem of the event; a schema whose
        `$ref` leads nowhere raises SchemaNotFound (the repository is broken).
        """
        if not isinstance(event, dict):
            return [f"$: an event is a JSON object, got {_kind(event)}"]
        uri = event.get("$schema", MISSING)
        if uri is MISSING:
            return ["$: '$schema' is a required property (an event names its schema, "
                    "e.g. \"$schema\": \"/mediawiki/page/change/1.2.0\")"]
        if not isinstance(uri, str):
            return [f"$.$schema: {_short(uri)} is not of type 'string'"]
        try:
            ref = self.resolve(uri)
        except SchemaNotFound as exc:
            return [f"$.$schema: unknown schema: {exc}"]
        return self.validate_against(event, ref.uri)

    def validate_against(self, event: Any, uri: str) -> list[str]:
        """Problems with `event` against the exact schema `uri`."""
        validator = self.validator(uri)
        try:
            errors = list(validator.iter_errors(event))
        except Unresolvable as exc:  # not reached: every $ref is checked when a schema is loaded
            raise SchemaNotFound(str(getattr(exc, "ref", exc)), [self.root], uri) from None
        return _messages(errors)


def _messages(errors: list[ValidationError]) -> list[str]:
    seen: set[str] = set()
    out = []
    for error in sorted(errors, key=lambda e: (e.json_path, e.message)):
        message = error.message
        if len(message) > _MAX_MESSAGE:
            message = message[: _MAX_MESSAGE - 3] + "..."
        text = f"{error.json_path}: {message}"
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@lru_cache(maxsize=1)
def default_repository() -> SchemaRepository:
    """The package's own copy of the schemas (one per process, validators cached)."""
    return SchemaRepository()


def validate(event: Any, repository: SchemaRepository | None = None) -> list[str]:
    """`SchemaRepository.validate` with the package's schemas (or `repository`)."""
    return (repository or default_repository()).validate(event)


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


def _schema_title(event: dict) -> str | None:
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
    spec = _BY_TITLE.get(_schema_title(event) or "")
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
        raise EventError(f"not a JSON object: {_kind(event)}")
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
        raise EventError(f"key at '{wiki_field}' must be a string, got {_kind(wiki)}")
    wiki = parse_key(wiki, wiki_field)
    page_id = get_path(event, page_field.split("."))
    if isinstance(page_id, str) and page_id.isdigit():
        page_id = int(page_id)
    if page_id is MISSING or page_id is None:
        raise EventError(f"no key at '{page_field}'")
    if isinstance(page_id, bool) or not isinstance(page_id, int):
        raise EventError(f"key at '{page_field}' must be an integer page id, got {_short(page_id)}")
    return f"{wiki}:{page_id}"


def event_time_ms(event: Any) -> int:
    """`meta.dt` (ISO-8601, when the event was produced) in epoch ms; EventError if unusable.

    Not `dt`: in a prediction that is the edit's time, copied from the page_change event.
    """
    if not isinstance(event, dict):
        raise EventError(f"not a JSON object: {_kind(event)}")
    return parse_time(get_path(event, ("meta", "dt")), "meta.dt")


def is_canary(event: Any) -> bool:
    """Synthetic monitoring events (`meta.domain == "canary"`): consumers drop them."""
    meta = event.get("meta") if isinstance(event, dict) else None
    return isinstance(meta, dict) and meta.get("domain") == "canary"


# --- EventGate ------------------------------------------------------------------------------------

def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventGate:
    """What EventGate does to events on the way in, without the HTTP and Kafka around it.

    For each event: the stream is its `meta.stream` (or the `stream` the events were
    posted for); the stream must be configured, the event's schema title must be the
    stream's, and the event must validate. Each invalid event becomes an `error` event
    (`/error/2.1.0`) for `eventgate-main.error.validation`.
    """

    def __init__(self, repository: SchemaRepository | None = None, streams: Mapping[str, StreamSpec] = STREAMS,
                 *, error_stream: str = ERROR_STREAM, emitter_id: str = "eventgate-main",
                 clock: Callable[[], str] = _now_iso):
        self.repository = repository or default_repository()
        self.streams = streams
        self.error_stream = error_stream
        self.emitter_id = emitter_id
        self.clock = clock

    def check(self, event: Any, stream: str | None = None) -> list[str]:
        """Why `event` would be rejected (empty: accepted)."""
        if not isinstance(event, dict):
            return [f"$: an event is a JSON object, got {_kind(event)}"]
        meta = event.get("meta")
        own = meta.get("stream") if isinstance(meta, dict) else None
        if own is not None and not isinstance(own, str):
            return [f"$.meta.stream: {_short(own)} is not of type 'string'"]
        if own and stream and own != stream:
            return [f"$.meta.stream: the event is for stream {own!r}, posted for {stream!r}"]
        name = own or stream
        if not name:
            return ["$.meta: 'stream' is a required property (an event names its stream)"]
        spec = self.streams.get(name)
        if spec is None:
            return [f"$.meta.stream: stream {name!r} is not configured here (configured: "
                    f"{', '.join(sorted(self.streams))})"]
        title = _schema_title(event)
        if title is not None and title != spec.schema_title:
            return [f"$.$schema: schema title {title!r} is not the one configured for stream {name!r} "
                    f"({spec.schema_title!r})"]
        return self.repository.validate(event)

    def accept(self, events: Any, stream: str | None = None) -> tuple[list[Any], list[dict]]:
        """(the valid events, one `error` event per invalid one); `events` is one event or a list."""
        batch = events if isinstance(events, list) else [events]
        valid: list[Any] = []
        errors: list[dict] = []
        for event in batch:
            problems = self.check(event, stream)
            if problems:
                errors.append(self.error_event(event, "; ".join(problems), stream))
            else:
                valid.append(event)
        return valid, errors

    def error_event(self, event: Any, message: str, stream: str | None = None) -> dict:
        """The `/error/2.1.0` event EventGate writes for a rejected event."""
        now = self.clock()
        meta: dict[str, Any] = {"stream": self.error_stream, "dt": now, "id": str(uuid.uuid4())}
        own = event.get("meta") if isinstance(event, dict) else None
        own = own if isinstance(own, dict) else {}
        for field in ("domain", "request_id", "uri"):
            if isinstance(own.get(field), str) and own[field]:
                meta[field] = own[field]
        error: dict[str, Any] = {
            "$schema": ERROR_SCHEMA_URI,
            "meta": meta,
            "dt": now,
            "emitter_id": self.emitter_id,
            "raw_event": json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str),
            "message": message,
            "error_type": "ValidationError",
        }
        schema_uri = event.get("$schema") if isinstance(event, dict) else None
        if isinstance(schema_uri, str):
            error["errored_schema_uri"] = schema_uri
        stream_name = own.get("stream") if isinstance(own.get("stream"), str) else stream
        if stream_name:
            error["errored_stream_name"] = stream_name
        return error
