"""The Wikimedia event platform sources, pure: schemas and `$ref` resolution, validation,
the stream registry, keys and times, EventGate.

The example events are copies (tests/sources/wikimedia/) of /work/shared/wikimedia's
`examples/` and `liftwing-fixtures/`, so the tests need nothing outside the repository;
`test_copies_match_the_shared_originals` checks the copies while the originals are there.
"""

from __future__ import annotations

import copy
import filecmp
import json
from pathlib import Path

import pytest

from timeline.dsl.errors import EventError, TimelineError, UsageError
from timeline.sources.eventplatform import (
    DEFAULT_ROOT,
    ERROR_SCHEMA_URI,
    ERROR_STREAM,
    STREAMS,
    EventGate,
    SchemaNotFound,
    SchemaRepository,
    default_repository,
    event_time_ms,
    is_canary,
    page_key,
    parse_schema_uri,
    topic_for,
    validate,
)

HERE = Path(__file__).resolve().parent
EXAMPLES = sorted((HERE / "wikimedia" / "examples").glob("*.json"))
LIFTWING = sorted((HERE / "wikimedia" / "liftwing-fixtures").glob("*.json"))
SHARED = Path("/work/shared/wikimedia")
ROOT = Path(__file__).resolve().parents[2]

PAGE_CHANGE_TITLES = ["mediawiki/page/change", "mediawiki/page/prediction_classification_change",
                      "development/cirrussearch/page_weighted_tags_change", "mediawiki/revision/create",
                      "mediawiki/revision/score", "error"]


def load(path: Path) -> dict:
    data = json.loads(path.read_text())
    return data["event"] if path.parent.name == "liftwing-fixtures" else data


def example(name: str) -> dict:
    return load(HERE / "wikimedia" / "examples" / name)


def liftwing(name: str) -> dict:
    return load(HERE / "wikimedia" / "liftwing-fixtures" / name)


PAGE_CHANGE = "mediawiki__page__change__1.2.0__example0.json"
WIKIDATA = "sample_page_change_event.revertrisk_wikidata.json"
ENWIKI = "sample_payload.revise_tone_task_generator.json"


@pytest.fixture(scope="module")
def sources_repo() -> SchemaRepository:
    return SchemaRepository(sources=True)


# --- the package's copy of the schemas -------------------------------------------------------------


# The title folders copied from schemas-event-primary (PROVENANCE.md). Other schemas may sit
# next to them (the project's own); these checks are about the copies.
COPIED_TITLES = PAGE_CHANGE_TITLES + [
    "fragment/common", "fragment/mediawiki/common", "fragment/mediawiki/revision/common",
    "fragment/mediawiki/revision/slot", "fragment/mediawiki/state/change/page",
    *(f"fragment/mediawiki/state/entity/{e}"
      for e in ("content", "page", "page_link", "revision", "revision_slots", "user")),
]


def test_the_schemas_are_package_data_with_their_provenance():
    assert DEFAULT_ROOT == ROOT / "timeline" / "sources" / "schemas"
    repo = SchemaRepository()
    assert set(COPIED_TITLES) <= set(repo.titles())
    provenance = (DEFAULT_ROOT / "PROVENANCE.md").read_text()
    assert "43aeb4abccaa542eb56491489eb830d6459453a6" in provenance
    # every version keeps its materialised form, and every title its unresolved source
    for title in COPIED_TITLES:
        folder = DEFAULT_ROOT / title
        assert title in provenance or title.startswith("fragment/mediawiki/state/entity/"), title
        for version in repo.versions(title):
            assert (folder / version).is_file() and (folder / f"{version}.yaml").is_file(), (title, version)
        assert (folder / "current.yaml").is_file(), title


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared Wikimedia data is not on this machine")
def test_copies_match_the_shared_originals():
    primary = SHARED / "schemas-event-primary" / "jsonschema"
    n = 0
    for title in COPIED_TITLES:
        originals = sorted(p.name for p in (primary / title).iterdir() if p.is_file())
        assert sorted(p.name for p in (DEFAULT_ROOT / title).iterdir() if p.is_file()) == originals, title
        for name in originals:
            assert filecmp.cmp(DEFAULT_ROOT / title / name, primary / title / name, shallow=False), (title, name)
            n += 1
    assert n > 100
    for name in ("examples", "liftwing-fixtures"):
        ours = sorted(p.name for p in (HERE / "wikimedia" / name).iterdir())
        assert ours == sorted(p.name for p in (SHARED / name).iterdir())
        for file in ours:
            assert filecmp.cmp(HERE / "wikimedia" / name / file, SHARED / name / file, shallow=False)


def test_every_ref_of_every_source_resolves_in_the_copy(sources_repo):
    """The copy holds every fragment its schemas' sources `$ref` (loading checks each ref)."""
    for title in sources_repo.titles():
        newest = sources_repo.versions(title)[-1]
        doc = sources_repo.document(f"/{title}/{newest}")
        assert doc["$id"] == f"/{title}/{newest}"


# --- schema URIs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("uri, expected", [
    ("/mediawiki/page/change/1.2.0", ("mediawiki/page/change", "1.2.0")),
    ("mediawiki/page/change/1.2.0", ("mediawiki/page/change", "1.2.0")),
    ("/mediawiki/page/change/1.2.0.yaml", ("mediawiki/page/change", "1.2.0")),
    ("/mediawiki/page/change/1.2.0.json", ("mediawiki/page/change", "1.2.0")),
    ("/mediawiki/page/change/latest", ("mediawiki/page/change", None)),
    ("/mediawiki/page/change", ("mediawiki/page/change", None)),
    ("/error/2.1.0", ("error", "2.1.0")),
    ("/fragment/common/2.0.0#", ("fragment/common", "2.0.0")),
])
def test_parse_schema_uri(uri, expected):
    assert parse_schema_uri(uri) == expected


@pytest.mark.parametrize("uri", ["", "  ", "https://schema.wikimedia.org/repositories/primary/jsonschema/error/2.1.0",
                                 "/"])
def test_parse_schema_uri_rejects(uri):
    with pytest.raises(ValueError):
        parse_schema_uri(uri)


def test_resolve_matches_by_title_and_falls_back_to_the_newest_version():
    repo = default_repository()
    exact = repo.resolve("/mediawiki/page/change/1.1.0")
    assert (exact.title, exact.version, exact.exact, exact.uri) == (
        "mediawiki/page/change", "1.1.0", True, "/mediawiki/page/change/1.1.0")
    newer = repo.resolve("/mediawiki/page/change/1.6.0")   # production is ahead of these files
    assert (newer.version, newer.exact) == ("1.2.0", False)
    assert repo.resolve("/mediawiki/page/change").version == "1.2.0"
    assert repo.versions("mediawiki/revision/create") == ["1.0.0", "1.1.0", "1.2.0", "2.0.0"]
    assert repo.versions("nope") == [] and repo.versions("../sources") == []


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES + LIFTWING, ids=lambda p: p.name)
def test_every_example_validates(path, sources_repo):
    event = load(path)
    assert validate(event) == []
    assert sources_repo.validate(event) == []  # the same through the unresolved sources


def test_there_are_all_the_examples():
    assert len(EXAMPLES) == 22 and len(LIFTWING) == 2


def test_production_events_ahead_of_the_schemas_validate_against_the_newest():
    for name, version in ((WIKIDATA, "1.6.0"), (ENWIKI, "1.3.0")):
        event = liftwing(name)
        assert event["$schema"] == f"/mediawiki/page/change/{version}"
        assert default_repository().resolve(event["$schema"]).version == "1.2.0"
        assert validate(event) == []
    # fields these schemas do not have, under additionalProperties: false
    wikidata = liftwing(WIKIDATA)
    assert "namespace_is_content" in wikidata["page"] and "user_central_id" in wikidata["performer"]


def test_unknown_fields_are_accepted_at_every_level():
    event = example(PAGE_CHANGE)
    event["brand_new_field"] = {"x": 1}
    event["meta"]["brand_new"] = "x"
    event["page"]["namespace_is_content"] = True
    event["performer"]["user_central_id"] = 42
    event["revision"]["revert"] = {"kind": "undo"}
    event["revision"]["content_slots"]["main"]["future"] = 1
    assert validate(event) == []
    tags = example("development__cirrussearch__page_weighted_tags_change__1.0.0__example0.json")
    tags["weighted_tags"]["future_op"] = []
    assert validate(tags) == []


def test_missing_required_field_is_named_with_its_path():
    event = example(PAGE_CHANGE)
    del event["page"]["page_title"]
    assert validate(event) == ["$.page: 'page_title' is a required property"]
    event = example(PAGE_CHANGE)
    del event["meta"]["stream"]
    del event["wiki_id"]
    assert validate(event) == ["$: 'wiki_id' is a required property", "$.meta: 'stream' is a required property"]


def test_wrong_type_is_named_with_its_path():
    event = example(PAGE_CHANGE)
    event["page"]["page_id"] = "1"
    event["revision"]["is_minor_edit"] = "no"
    assert validate(event) == ["$.page.page_id: '1' is not of type 'integer'",
                               "$.revision.is_minor_edit: 'no' is not of type 'boolean'"]


def test_bounds_and_date_time_are_checked():
    event = example(PAGE_CHANGE)
    event["page"]["page_id"] = -1
    event["meta"]["dt"] = "yesterday"
    event["dt"] = "2021-02-30T00:00:00Z"
    problems = validate(event)
    assert "$.page.page_id: -1 is less than the minimum of 0" in problems
    assert "$.meta.dt: 'yesterday' is not a 'date-time'" in problems
    assert "$.dt: '2021-02-30T00:00:00Z' is not a 'date-time'" in problems
    good = example(PAGE_CHANGE)
    for value in ("2025-10-29T11:05:04.238793Z", "2021-01-01T00:00:00.0Z", "2021-01-01T01:00:00+01:00"):
        good["meta"]["dt"] = value
        assert validate(good) == [], value


def test_unknown_and_missing_schema_are_clear():
    event = example(PAGE_CHANGE)
    event["$schema"] = "/mediawiki/page/chnage/1.0.0"
    (problem,) = validate(event)
    assert problem.startswith("$.$schema: unknown schema:")
    assert "no schema titled 'mediawiki/page/chnage'" in problem
    del event["$schema"]
    (problem,) = validate(event)
    assert problem.startswith("$: '$schema' is a required property")
    event["$schema"] = 12
    assert validate(event) == ["$.$schema: 12 is not of type 'string'"]
    event["$schema"] = "https://schema.wikimedia.org/repositories/primary/jsonschema/mediawiki/page/change/1.2.0"
    (problem,) = validate(event)
    assert "only relative schema URIs" in problem
    assert validate(["not", "an", "event"]) == ["$: an event is a JSON object, got an array"]


def test_the_version_named_is_the_one_used():
    """mediawiki/page/change 1.2.0 made `performer` optional; 1.1.0 requires it."""
    event = example(PAGE_CHANGE)
    del event["performer"]
    assert validate(event) == []
    event["$schema"] = "/mediawiki/page/change/1.1.0"
    assert validate(event) == ["$: 'performer' is a required property"]


def test_ref_siblings_extend_the_target_as_jsonschema_tools_does(sources_repo):
    """The source of fragment/mediawiki/state/change/page puts `required: [rev_id, rev_dt]` next
    to a `$ref`; plain draft-07 would ignore it, the materialised schema (and we) do not."""
    event = example(PAGE_CHANGE)
    del event["revision"]["rev_id"]
    assert validate(event) == ["$.revision: 'rev_id' is a required property"]
    assert sources_repo.validate(event) == ["$.revision: 'rev_id' is a required property"]


def _mutants(event: dict):
    """Every field deleted, and every value replaced by one of another type, one at a time."""
    def walk(node, path):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for k, v in items:
            yield path + (k,), v
            yield from walk(v, path + (k,))

    other = {str: 12345, bool: "x", int: "x", float: "x", dict: "x", list: "x", type(None): 1}
    for path, value in list(walk(event, ())):
        if path == ("$schema",):
            continue
        for how in ("delete", "retype"):
            mutant = copy.deepcopy(event)
            parent = mutant
            for k in path[:-1]:
                parent = parent[k]
            if how == "delete":
                parent.pop(path[-1])
            else:
                parent[path[-1]] = other[type(value)]
            yield path, how, mutant


def test_sources_and_materialised_schemas_give_the_same_verdicts(sources_repo):
    """Validating through the unresolved sources (every `$ref` resolved here) gives exactly the
    problems the materialised schemas give, for every example and ~1,800 broken variants."""
    materialised = default_repository()
    n = invalid = 0
    for path in EXAMPLES + LIFTWING:
        for where, how, mutant in _mutants(load(path)):
            expected = materialised.validate(mutant)
            assert sources_repo.validate(mutant) == expected, (path.name, where, how)
            n += 1
            invalid += bool(expected)
    assert n > 1500 and invalid > 1000


# --- a repository whose refs lead nowhere ---------------------------------------------------------


def _write(root: Path, rel: str, doc: dict) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def _thing(ref: str) -> dict:
    return {"title": "test/thing", "$id": "/test/thing/1.0.0", "type": "object",
            "allOf": [{"$ref": ref}], "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def test_a_missing_fragment_raises_schema_not_found_naming_the_ref(tmp_path):
    _write(tmp_path, "test/thing/1.0.0.yaml", _thing("/fragment/missing/1.0.0"))
    repo = SchemaRepository(tmp_path)
    event = {"$schema": "/test/thing/1.0.0", "n": 1}
    with pytest.raises(SchemaNotFound) as info:
        repo.validate(event)
    err = info.value
    assert isinstance(err, TimelineError)
    assert err.uri == "/fragment/missing/1.0.0" and err.referenced_from == "/test/thing/1.0.0"
    assert "/fragment/missing/1.0.0" in str(err) and "/test/thing/1.0.0" in str(err)
    assert str(tmp_path / "fragment" / "missing" / "1.0.0.yaml") in err.looked_in
    assert "looked in" in str(err)


def test_a_missing_part_of_a_fragment_raises_schema_not_found(tmp_path):
    _write(tmp_path, "fragment/common/1.0.0", {"$id": "/fragment/common/1.0.0", "definitions": {"a": {}}})
    _write(tmp_path, "test/thing/1.0.0", _thing("/fragment/common/1.0.0#/definitions/nope"))
    with pytest.raises(SchemaNotFound, match="/definitions/nope"):
        SchemaRepository(tmp_path).validator("/test/thing/1.0.0")


def test_a_missing_schema_names_the_files_looked_at(tmp_path):
    with pytest.raises(SchemaNotFound) as info:
        SchemaRepository(tmp_path).document("/test/thing/2.0.0")
    assert [Path(p).name for p in info.value.looked_in] == ["2.0.0", "2.0.0.yaml", "2.0.0.json"]


def test_refs_resolve_through_the_repository(tmp_path):
    """A small repository in the layout of the real one: relative refs, `#` refs, `./#` refs,
    `$ref` siblings, a JSON file, fragments of fragments."""
    _write(tmp_path, "fragment/base/1.0.0.json", {
        "$id": "/fragment/base/1.0.0", "type": "object", "additionalProperties": False,
        "properties": {"meta": {"$ref": "/fragment/meta/1.0.0#"}}, "required": ["meta"]})
    _write(tmp_path, "fragment/meta/1.0.0", {
        "$id": "/fragment/meta/1.0.0", "type": "object", "additionalProperties": False,
        "properties": {"stream": {"type": "string"}}, "required": ["stream"]})
    _write(tmp_path, "test/thing/1.0.0.yaml", {
        "title": "test/thing", "$id": "/test/thing/1.0.0", "type": "object",
        "allOf": [{"$ref": "/fragment/base/1.0.0"}],
        "properties": {"n": {"$ref": "./#/definitions/count", "minimum": 1},
                       "m": {"$ref": "#/properties/n"}},
        "definitions": {"count": {"type": "integer"}}, "required": ["n"]})
    repo = SchemaRepository(tmp_path)
    assert repo.validate({"$schema": "/test/thing/1.0.0", "n": 1, "meta": {"stream": "s", "new": 1}}) == []
    assert repo.validate({"$schema": "/test/thing/1.0.0", "n": 0, "m": "x", "meta": {}}) == [
        "$.m: 'x' is not of type 'integer'", "$.meta: 'stream' is a required property",
        "$.n: 0 is less than the minimum of 1"]


# --- streams, keys, times ----------------------------------------------------------------------------


def test_every_stream_has_its_schema_and_topic():
    assert set(STREAMS) == {
        "mediawiki.page_change.v1", "mediawiki.article_country_prediction_change.v1",
        "mediawiki.page_prediction_change.rc0", "mediawiki.page_revert_risk_prediction_change.v1",
        "mediawiki.cirrussearch.page_weighted_tags_change.rc0", "mediawiki.revision-create",
        "mediawiki.revision-score", "eventgate-main.error.validation"}
    for name, spec in STREAMS.items():
        assert default_repository().versions(spec.schema_title), name
        assert spec.topic == f"persistent://public/default/{name}"
        assert spec.time_field == "meta.dt"
    assert STREAMS["mediawiki.revision-create"].wiki_field == "database"
    assert STREAMS["mediawiki.page_change.v1"].page_id_field == "page.page_id"
    assert not STREAMS[ERROR_STREAM].has_page


def test_topic_names():
    assert topic_for("mediawiki.page_change.v1") == "persistent://public/default/mediawiki.page_change.v1"
    assert topic_for("x", "t", "ns") == "persistent://t/ns/x"
    for bad in ("", "a b", "a/b", "é"):
        with pytest.raises(UsageError):
            topic_for(bad)


KEYS_AND_TIMES = [
    (PAGE_CHANGE, "example:1", "2021-01-01T00:00:00Z"),
    ("mediawiki__page__change__1.0.0__example0.json", "example:1", "2021-01-01T00:00:00Z"),
    ("mediawiki__page__prediction_classification_change__1.1.0__example0.json", "example:1", "2021-01-01T00:00:00Z"),
    ("development__cirrussearch__page_weighted_tags_change__1.0.0__example1.json", "example:42",
     "2024-07-22T00:00:00Z"),
    ("mediawiki__revision__create__1.0.0__example0.json", "examplewiki:123", "2020-06-10T18:57:16Z"),
    ("mediawiki__revision__create__2.0.0__example1.json", "examplewiki:123", "2020-06-10T19:02:04Z"),
    ("mediawiki__revision__score__3.0.0__example0.json", "examplewiki:123", "2020-06-10T18:57:16Z"),
    (WIKIDATA, "wikidatawiki:60683518", "2026-06-22T09:48:11.082Z"),
    (ENWIKI, "enwiki:70793851", "2025-10-29T11:05:04.239Z"),  # .238793: to the nearest ms, as everywhere
]


def _ms(text: str) -> int:
    import datetime as dt
    return int(dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


@pytest.mark.parametrize("name, key, time", KEYS_AND_TIMES, ids=[k[0] for k in KEYS_AND_TIMES])
def test_keys_and_times_of_the_examples(name, key, time):
    event = liftwing(name) if name in (WIKIDATA, ENWIKI) else example(name)
    assert page_key(event) == key
    assert event_time_ms(event) == _ms(time)


def test_the_time_is_meta_dt_not_the_edit_time():
    event = liftwing(WIKIDATA)
    assert event["dt"] == "2026-06-22T09:48:10Z"     # the edit
    assert event_time_ms(event) == _ms("2026-06-22T09:48:11.082Z")  # the event


def test_no_usable_key_or_time_is_an_event_error():
    # The schema's own example has a typo: `"dt\""` for meta.dt (it validates: meta.dt is optional).
    typo = example("mediawiki__revision__create__2.0.0__example2.json")
    assert validate(typo) == [] and page_key(typo) == "my_wiki:23"
    with pytest.raises(EventError, match="no usable time at 'meta.dt'"):
        event_time_ms(typo)
    event = example(PAGE_CHANGE)
    del event["page"]["page_id"]
    with pytest.raises(EventError, match="no key at 'page.page_id'"):
        page_key(event)
    event = example(PAGE_CHANGE)
    event["wiki_id"] = ""
    with pytest.raises(EventError, match="'wiki_id' is empty"):
        page_key(event)
    event = example(PAGE_CHANGE)
    event["page"]["page_id"] = 1.5
    with pytest.raises(EventError, match="must be an integer page id"):
        page_key(event)
    with pytest.raises(EventError, match="not about a page"):
        page_key(example("error__2.1.0__example0.json"))
    with pytest.raises(EventError, match="neither 'wiki_id' nor 'database'"):
        page_key({"meta": {"stream": "somewhere.else"}})
    with pytest.raises(EventError, match="not a JSON object"):
        event_time_ms([1])


def test_key_fields_follow_the_stream_when_the_schema_is_unknown():
    event = example("mediawiki__revision__create__2.0.0__example0.json")
    del event["$schema"]
    assert page_key(event) == "examplewiki:123"                      # meta.stream mediawiki.revision-create
    assert page_key(event, "mediawiki.revision-create") == "examplewiki:123"
    with pytest.raises(EventError, match="no key at 'wiki_id'"):
        page_key(event, STREAMS["mediawiki.page_change.v1"])


def test_canary():
    event = example(PAGE_CHANGE)
    assert not is_canary(event)
    event["meta"]["domain"] = "canary"
    assert is_canary(event)
    assert not is_canary({"meta": "canary"}) and not is_canary(None)


# --- EventGate ------------------------------------------------------------------------------------


def on_stream(event: dict, stream: str) -> dict:
    event = copy.deepcopy(event)
    event["meta"]["stream"] = stream
    return event


def test_eventgate_accepts_valid_events_of_configured_streams():
    gate = EventGate()
    events = [
        on_stream(example(PAGE_CHANGE), "mediawiki.page_change.v1"),
        liftwing(WIKIDATA),
        on_stream(example("mediawiki__page__prediction_classification_change__1.1.0__example0.json"),
                  "mediawiki.article_country_prediction_change.v1"),
        on_stream(example("development__cirrussearch__page_weighted_tags_change__1.0.0__example2.json"),
                  "mediawiki.cirrussearch.page_weighted_tags_change.rc0"),
        example("mediawiki__revision__score__2.0.0__example0.json"),
    ]
    valid, errors = gate.accept(events)
    assert errors == [] and valid == events
    assert gate.accept(events[0]) == ([events[0]], [])


def test_eventgate_turns_invalid_events_into_error_events_that_validate():
    gate = EventGate(clock=lambda: "2026-01-02T03:04:05.678Z")
    wrong_type = on_stream(example(PAGE_CHANGE), "mediawiki.page_change.v1")
    wrong_type["page"]["page_id"] = "1"
    wrong_title = on_stream(example(PAGE_CHANGE), "mediawiki.revision-create")
    no_schema = on_stream(example(PAGE_CHANGE), "mediawiki.page_change.v1")
    del no_schema["$schema"]
    unknown_stream = example(PAGE_CHANGE)  # meta.stream "mediawiki.page_change": not configured
    good = liftwing(ENWIKI)
    valid, errors = gate.accept([wrong_type, good, wrong_title, no_schema, unknown_stream, "junk"])
    assert valid == [good]
    assert [e["message"] for e in errors] == [
        "$.page.page_id: '1' is not of type 'integer'",
        "$.$schema: schema title 'mediawiki/page/change' is not the one configured for stream "
        "'mediawiki.revision-create' ('mediawiki/revision/create')",
        errors[2]["message"],
        errors[3]["message"],
        "$: an event is a JSON object, got a string",
    ]
    assert errors[2]["message"].startswith("$: '$schema' is a required property")
    assert errors[3]["message"].startswith("$.meta.stream: stream 'mediawiki.page_change' is not configured")
    for error in errors:
        assert error["$schema"] == ERROR_SCHEMA_URI
        assert error["meta"]["stream"] == ERROR_STREAM
        assert error["meta"]["dt"] == error["dt"] == "2026-01-02T03:04:05.678Z"
        assert validate(error) == [], error
        assert EventGate().check(error) == []  # it is a valid event of its own stream
    first = errors[0]
    assert json.loads(first["raw_event"]) == wrong_type
    assert first["errored_schema_uri"] == "/mediawiki/page/change/1.2.0"
    assert first["errored_stream_name"] == "mediawiki.page_change.v1"
    assert first["meta"]["domain"] == "examplewiki"
    assert "errored_schema_uri" not in errors[2]
    assert json.loads(errors[4]["raw_event"]) == "junk" and "errored_stream_name" not in errors[4]


def test_eventgate_stream_argument():
    gate = EventGate()
    event = example(PAGE_CHANGE)
    del event["meta"]["stream"]
    assert gate.check(event) == ["$.meta: 'stream' is a required property (an event names its stream)"]
    # posted for a stream: the title check passes, the schema still requires meta.stream
    assert gate.check(event, "mediawiki.page_change.v1") == ["$.meta: 'stream' is a required property"]
    event["meta"]["stream"] = "mediawiki.page_change.v1"
    assert gate.check(event, "mediawiki.page_change.v1") == []
    assert gate.check(event, "mediawiki.revision-create") == [
        "$.meta.stream: the event is for stream 'mediawiki.page_change.v1', posted for 'mediawiki.revision-create'"]
    _, (error,) = gate.accept([event], "mediawiki.revision-create")
    assert error["errored_stream_name"] == "mediawiki.page_change.v1" and validate(error) == []


def test_the_event_platform_modules_are_pure():
    """No Pulsar and no HTTP client is imported by the pure modules (nor by ingest, until used)."""
    import subprocess
    import sys

    code = ("import sys, timeline.sources.eventplatform, timeline.sources.sse, timeline.sources.ingest, timeline.cli.ingest; "
            "print(sorted(m for m in ('pulsar', '_pulsar', 'urllib.request', 'http.client') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
