"""Event platform schemas: the repository of versions, `$ref` resolution, and validation
(see eventplatform.py for the whole picture)."""

from __future__ import annotations

import copy
import datetime as _dt
import json
import re
import threading
from collections.abc import Iterable
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

from timeline.dsl.errors import TimelineError
from timeline.dsl.events import MISSING

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
            return [f"$: an event is a JSON object, got {kind_of(event)}"]
        uri = event.get("$schema", MISSING)
        if uri is MISSING:
            return ["$: '$schema' is a required property (an event names its schema, "
                    "e.g. \"$schema\": \"/mediawiki/page/change/1.2.0\")"]
        if not isinstance(uri, str):
            return [f"$.$schema: {short_repr(uri)} is not of type 'string'"]
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


def kind_of(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@lru_cache(maxsize=1)
def default_repository() -> SchemaRepository:
    """The package's own copy of the schemas (one per process, validators cached)."""
    return SchemaRepository()


def validate(event: Any, repository: SchemaRepository | None = None) -> list[str]:
    """`SchemaRepository.validate` with the package's schemas (or `repository`)."""
    return (repository or default_repository()).validate(event)
