"""The Arrow reading path gives exactly the exact decoder's answers (dsl/columnar.py vs dsl/decode.py)."""

from __future__ import annotations

import datetime as dt

import msgspec
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import timeline.dsl.columnar as columnar
from timeline.dsl.batch import run_eval
from timeline.dsl.columnar import read_jsonl, table_events
from timeline.dsl.compiler import compile_expression
from timeline.dsl.decode import decode_jsonl
from timeline.dsl.limits import MAX_EVENT_BYTES, MAX_EVENT_DEPTH

EXPRESSIONS = [
    "latest_event_to_state(s)",
    "latest_event_to_state(n)",
    "latest_event_to_state(p.q)",
    "latest_event_to_state(b)",
    'has_existed(n > 1 && b == true) && !has_existed_within(s == "x", 5)',
    'has_existed(p.q == "x" || p.q == 1)',
    'duration_where(latest_event_to_state(s) == "x")',
    "duration_in_cur_state(latest_event_to_state(n)) >= 3",
    "latest_event_to_state(s) | aggregate(group_by(p.q), count)",
]

# Each column draws its values from one family per example, so most examples are
# typed cleanly (the fast path runs) and some mix kinds (the fallback runs).
FAMILIES = {
    "str": st.sampled_from(["x", "y", "", "1"]),
    "int": st.integers(-3, 3),
    "float": st.sampled_from([0.5, 2.5, -1.25]),
    "num": st.one_of(st.integers(0, 3), st.sampled_from([1.0, 2.5])),
    "bool": st.booleans(),
    "mixed": st.one_of(st.integers(0, 2), st.sampled_from(["1", "x"]), st.booleans()),
}
ISO = st.builds(lambda ms, fmt: fmt(ms), st.integers(0, 60_000), st.sampled_from([
    lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).isoformat().replace("+00:00", "Z"),
    lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).replace(tzinfo=None).isoformat(),
    lambda ms: dt.datetime.fromtimestamp(ms / 1000, dt.timezone(dt.timedelta(hours=2))).isoformat(),
]))
TIMES = {
    "int": st.integers(0, 60_000),
    "digits": st.integers(0, 60_000).map(str),
    "iso": ISO,
    "mixed": st.one_of(st.integers(0, 60_000), ISO),
}
KEYS = {"str": st.sampled_from(["a", "b", "c"]), "int": st.integers(1, 3),
        "mixed": st.sampled_from(["a", 7, "7"])}


@st.composite
def jsonl(draw):
    """(data, has_bad): JSON lines with optional, null, nested and mis-typed fields."""
    clean = draw(st.integers(0, 2)) > 0  # two in three examples are typed cleanly
    fam = {c: draw(st.sampled_from(["str", "int", "float", "bool"] if clean else sorted(FAMILIES)))
           for c in ("s", "n", "b", "q")}
    time_kind = draw(st.sampled_from(["int", "digits", "iso"] if clean else sorted(TIMES)))
    key_kind = draw(st.sampled_from(["str", "int"] if clean else sorted(KEYS)))
    broken = None if clean else draw(st.sampled_from([None, "json", "no-key", "no-time", "bad-time", "deep"]))
    lines = []
    for _ in range(draw(st.integers(1, 30))):
        event: dict = {"k": draw(KEYS[key_kind]), "t": draw(TIMES[time_kind])}
        for c in ("s", "n", "b"):
            if draw(st.integers(0, 3)):
                event[c] = draw(st.one_of(st.none(), FAMILIES[fam[c]])) if draw(st.booleans()) else \
                    draw(FAMILIES[fam[c]])
        nest = draw(st.integers(0, 3))
        if nest == 1:
            event["p"] = None
        elif nest >= 2:
            event["p"] = {"q": draw(FAMILIES[fam["q"]]), "other": 1} if nest == 3 else {"other": 2}
        lines.append(msgspec.json.encode(event))
    if broken is not None:
        at = draw(st.integers(0, len(lines)))
        bad = {"json": b'{"k": "a", "t": 1', "no-key": b'{"t": 5, "s": "x"}', "no-time": b'{"k": "a"}',
               "bad-time": b'{"k": "a", "t": "yesterday"}',
               # one level past MAX_EVENT_DEPTH, in a field no expression reads (Arrow would read it)
               "deep": b'{"k": "a", "t": 1, "x": ' + b"[" * MAX_EVENT_DEPTH + b"]" * MAX_EVENT_DEPTH + b"}"}[broken]
        lines.insert(at, bad)
    if draw(st.integers(0, 4)) == 0:  # nested right at the limit: a good line
        lines.insert(draw(st.integers(0, len(lines))),
                     b'{"k": "b", "t": 2, "x": ' + b'{"a": ' * (MAX_EVENT_DEPTH - 1) + b"1" + b"}" * MAX_EVENT_DEPTH)
    if draw(st.booleans()):
        lines.insert(draw(st.integers(0, len(lines))), b"")  # a blank line
    return b"\n".join(lines) + (b"\n" if draw(st.booleans()) else b"")


def answers(data: bytes, expression: str, decode) -> tuple:
    plan = compile_expression(expression)
    decoded = decode(data, (("k",),), ("t",), plan.columns())
    bad = [(b.line, b.reason, b.raw) for b in decoded.bad]
    events = decoded.events
    at = int(events.time.max()) if len(events) else None
    return (bad, decoded.key_names, msgspec.json.encode(run_eval(plan, decoded, None, None, None)),
            msgspec.json.encode(run_eval(plan, decoded, at, None, None)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=jsonl(), expression=st.sampled_from(EXPRESSIONS))
def test_arrow_reader_answers_exactly_like_the_exact_decoder(data, expression):
    assert answers(data, expression, read_jsonl) == answers(data, expression, decode_jsonl)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=jsonl(), expression=st.sampled_from(EXPRESSIONS), slice_bytes=st.sampled_from([40, 150, 400]))
def test_slice_by_slice_reading_answers_exactly_too(data, expression, slice_bytes):
    """Input Arrow cannot read whole is read again in slices (Arrow where it can, the exact decoder
    where it cannot) and merged: same answers, same bad lines with their numbers."""
    saved = columnar.SLICE_BYTES, columnar.JSON_BLOCK_BYTES
    columnar.SLICE_BYTES, columnar.JSON_BLOCK_BYTES = slice_bytes, 64
    try:
        sliced = answers(data, expression, read_jsonl)
    finally:
        columnar.SLICE_BYTES, columnar.JSON_BLOCK_BYTES = saved
    assert sliced == answers(data, expression, decode_jsonl)


def test_bad_lines_in_a_big_input_leave_the_other_slices_to_arrow(monkeypatch):
    lines = [msgspec.json.encode({"k": f"s{i % 5}", "t": i, "s": "xy"[i % 2]}) for i in range(3000)]
    lines[1234] = b"not json"
    data = b"\n".join(lines) + b"\n"
    expected = answers(data, "latest_event_to_state(s)", decode_jsonl)
    monkeypatch.setattr(columnar, "SLICE_BYTES", 8000)
    exact_slices = []

    def exact(data, *args):
        exact_slices.append(len(data))
        return decode_jsonl(data, *args)

    monkeypatch.setattr(columnar, "decode_jsonl", exact)
    assert answers(data, "latest_event_to_state(s)", read_jsonl) == expected
    assert expected[0][0][:2] == (1235, expected[0][0][1]) and len(exact_slices) == 1


def test_clean_input_takes_the_arrow_path(monkeypatch):
    """Typed-clean JSON lines never reach the exact decoder (else the speed is not there)."""
    def refuse(*args, **kwargs):
        raise AssertionError("fell back to the exact decoder")

    lines = [{"k": f"s{i % 7}", "t": 1000 + i, "s": "xyz"[i % 3], "n": i % 5 if i % 4 else None,
              "p": {"q": "u" if i % 2 else "v", "skip": [1]}, "extra": {"deep": i}} for i in range(2000)]
    data = b"\n".join(msgspec.json.encode(e) for e in lines) + b"\n"
    expected = {e: answers(data, e, decode_jsonl) for e in EXPRESSIONS}
    monkeypatch.setattr(columnar, "decode_jsonl", refuse)
    for expression in EXPRESSIONS:
        assert answers(data, expression, read_jsonl) == expected[expression], expression


def test_lines_past_the_size_limit_are_bad_lines_on_the_arrow_path_too(tmp_path):
    """A line one byte past MAX_EVENT_BYTES is a bad line whichever path reads it; one at the
    limit is an event (the size check looks at whole lines, wherever they fall in the file)."""
    pad = MAX_EVENT_BYTES - len(b'{"k": "b", "t": 3, "pad": ""}')
    at_limit = b'{"k": "b", "t": 3, "pad": "%s"}' % (b"x" * pad)
    past = b'{"k": "a", "t": 4, "pad": "%s"}' % (b"x" * (pad + 1))
    assert len(at_limit) == MAX_EVENT_BYTES and len(past) == MAX_EVENT_BYTES + 1
    small = [msgspec.json.encode({"k": "a", "t": i, "s": "xy"[i % 2]}) for i in range(50)]
    for lines in ([*small, past, at_limit], [at_limit, *small], [past], [*small[:3], past, *small[3:]]):
        data = b"\n".join(lines) + b"\n"
        path = tmp_path / "e.jsonl"
        path.write_bytes(data)
        plan = compile_expression("latest_event_to_state(s)")
        exact = decode_jsonl(data, (("k",),), ("t",), plan.columns())
        for fast in (read_jsonl(data, (("k",),), ("t",), plan.columns()),
                     columnar.read_events_file(str(path), (("k",),), ("t",), plan.columns())):
            assert [(b.line, b.reason) for b in fast.bad] == [(b.line, b.reason) for b in exact.bad]
            assert fast.key_names == exact.key_names
            assert columnar.answer_json(plan, fast, None, None, None) == msgspec.json.encode(
                run_eval(plan, exact, None, None, None))
        assert any("bytes; the limit is" in b.reason for b in exact.bad) == (past in lines)


def test_nested_but_within_limits_stays_on_the_arrow_path(monkeypatch):
    """Many brackets (nested fields on every line, a line at the nesting limit, brackets inside
    strings) are checked line by line, not sent to the exact decoder."""
    def refuse(*args, **kwargs):
        raise AssertionError("fell back to the exact decoder")

    lines = [msgspec.json.encode({"k": f"s{i % 3}", "t": i, "s": "x", "p": {"q": [[1]], "r": "{[" * 40}})
             for i in range(500)]
    lines.insert(7, b'{"k": "s1", "t": 7, "x": ' + b"[" * (MAX_EVENT_DEPTH - 1) + b"]" * (MAX_EVENT_DEPTH - 1) + b"}")
    data = b"\n".join(lines)
    expected = answers(data, "latest_event_to_state(s)", decode_jsonl)
    assert expected[0] == []
    monkeypatch.setattr(columnar, "decode_jsonl", refuse)
    assert answers(data, "latest_event_to_state(s)", read_jsonl) == expected


def test_iso_times_and_a_field_missing_from_the_first_block(monkeypatch):
    monkeypatch.setattr(columnar, "JSON_BLOCK_BYTES", 256)  # the sample sees no "late" field
    lines = [{"k": "a", "t": f"2025-02-07T13:29:{i % 60:02d}Z", "s": "x"} for i in range(40)]
    lines.append({"k": "a", "t": "2025-02-07T13:30:00+01:00", "late": "yes"})
    data = b"\n".join(msgspec.json.encode(e) for e in lines)
    for expression in ("latest_event_to_state(late)", "latest_event_to_state(s)"):
        assert answers(data, expression, read_jsonl) == answers(data, expression, decode_jsonl)


# --- typed tables (Parquet, Arrow, DataFrames) -----------------------------------

def test_table_rows_without_key_or_time_are_bad_rows_with_reasons():
    table = pa.table({"k": ["a", None, "b", ""], "t": ["1970-01-01T00:00:01Z", "5", None, "7"],
                      "s": ["x", "y", "z", "w"]})
    plan = compile_expression("latest_event_to_state(s)")
    decoded = table_events(table, ("k",), ("t",), plan.columns())
    assert [(b.line, b.reason) for b in decoded.bad] == [
        (2, "no key at 'k'"), (3, "no usable time at 't'"), (4, "key at 'k' is empty")]
    assert msgspec.to_builtins(run_eval(plan, decoded, None, None, None)) == {
        "a": [{"start": 1000, "end": None, "value": "x"}]}


def test_table_timestamps_nested_structs_and_flat_dotted_columns():
    ts = pa.array([dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc),
                   dt.datetime(2025, 1, 1, 0, 0, 1, 500, tzinfo=dt.timezone.utc)], pa.timestamp("us", tz="UTC"))
    nested = pa.table({"page": pa.array([{"id": 1}, {"id": 2}]), "ts": ts, "v": [1.0, 2.5]})
    flat = pa.table({"page.id": [1, 2], "ts": ts, "v": [1.0, 2.5]})
    plan = compile_expression("latest_event_to_state(v)")
    for table in (nested, flat):
        decoded = table_events(table, ("page", "id"), ("ts",), plan.columns())
        assert decoded.key_names == ["1", "2"]
        assert decoded.events.time.tolist() == [1735689600000, 1735689601001]
        assert msgspec.to_builtins(run_eval(plan, decoded, None, None, None)) == {
            "1": [{"start": 1735689600000, "end": None, "value": 1.0}],
            "2": [{"start": 1735689601001, "end": None, "value": 2.5}]}


def test_values_compare_by_kind_in_typed_tables():
    table = pa.table({"k": ["a", "a", "b", "c"], "t": [1, 2, 3, 4], "n": [1, 2, 1, 3],
                      "f": [1.0, 2.0, 3.0, 4.0], "s": ["1", "2", "1", "3"]})
    plan = compile_expression('has_existed(n == 1) && has_existed(f == 1) && !has_existed(s == 1)')
    decoded = table_events(table, ("k",), ("t",), plan.columns())
    out = msgspec.to_builtins(run_eval(plan, decoded, 10, None, None))
    assert out == {"a": True, "b": False, "c": False}
    assert np.array_equal(decoded.events.column(("n",)).codes, [0, 1, 0, 2])


@pytest.mark.parametrize("name,kind,compression", [
    ("e.jsonl", "jsonl", None), ("e.jsonl.gz", "jsonl", "gzip"), ("E.NDJSON.ZST", "jsonl", "zstd"),
    ("e.parquet", "parquet", None), ("e.arrow", "arrow", None), ("e.feather", "arrow", None),
    ("-", "jsonl", None),
])
def test_format_by_suffix(name, kind, compression):
    fmt = columnar.EventsFormat.of(name)
    assert (fmt.kind, fmt.compression) == (kind, compression)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=jsonl(), expression=st.sampled_from(EXPRESSIONS + [
    "duration_where(has_existed(n > 1))", "duration_in_cur_state(latest_event_to_state(s))",
    "latest_event_to_state(n) > 0.5"]), clip=st.sampled_from([(None, None, None), (None, 3, 50), (20, None, None)]))
def test_json_answer_renders_byte_for_byte_like_msgspec(data, expression, clip):
    at, frm, to = clip
    plan = compile_expression(expression)
    decoded = decode_jsonl(data, ("k",), ("t",), plan.columns())
    try:
        expected = msgspec.json.encode(run_eval(plan, decoded, at, frm, to))
    except Exception as exc:  # a usage error (an aggregation without --at ...) is the same either way
        with pytest.raises(type(exc)):
            columnar.answer_json(plan, decoded, at, frm, to)
        return
    assert columnar.answer_json(plan, decoded, at, frm, to) == expected


def test_json_answer_renders_fractional_numbers_and_odd_strings():
    events = [{"k": 'a"b', "t": 0, "s": "é\n\u2028", "n": 1.5}, {"k": 'a"b', "t": 3, "s": None, "n": 2},
              {"k": "c", "t": 1, "n": -0.0}]
    data = b"\n".join(msgspec.json.encode(e) for e in events)
    for expression in ("latest_event_to_state(s)", "latest_event_to_state(n)",
                       "duration_where(has_existed(n > 1)) ", "has_existed(n > 1)"):
        plan = compile_expression(expression)
        decoded = read_jsonl(data, ("k",), ("t",), plan.columns())
        assert columnar.answer_json(plan, decoded, None, None, None) == msgspec.json.encode(
            run_eval(plan, decoded, None, None, None)), expression


def test_composite_keys_are_escaped_on_the_arrow_path_like_the_exact_decoder(monkeypatch):
    events = [{"k": "a:b", "w": "c", "t": 1, "s": "x"}, {"k": "a", "w": "b:c", "t": 2, "s": "y"},
              {"k": "a\\", "w": ":", "t": 3, "s": "z"}, {"k": "enwiki", "w": "12", "t": 4, "s": "x"}]
    data = b"\n".join(msgspec.json.encode(e) for e in events)
    plan = compile_expression("latest_event_to_state(s)")
    exact = decode_jsonl(data, (("k",), ("w",)), ("t",), plan.columns())
    monkeypatch.setattr(columnar, "decode_jsonl", None)  # the Arrow path only
    fast = read_jsonl(data, (("k",), ("w",)), ("t",), plan.columns())
    assert fast.key_names == exact.key_names == ["a\\:b:c", "a:b\\:c", "a\\\\:\\:", "enwiki:12"]


# --- evaluating and rendering key ranges in threads ----------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=jsonl(), expression=st.sampled_from(EXPRESSIONS + [
    "duration_where(has_existed(n > 1))", "duration_in_cur_state(latest_event_to_state(s))",
    "latest_event_to_state(n) > 0.5"]), threads=st.integers(2, 5))
def test_key_ranges_in_threads_answer_byte_for_byte_like_one_thread(data, expression, threads):
    """Sorting, evaluating and rendering key ranges in threads (forced here on a few events)
    gives the events, bad lines and answer of the exact decoder and one evaluation."""
    plan = compile_expression(expression)
    exact = decode_jsonl(data, (("k",),), ("t",), plan.columns())
    try:
        expected = msgspec.json.encode(run_eval(plan, exact, None, None, None))
    except Exception as exc:
        expected = type(exc)
    saved = columnar.MIN_EVENTS_PER_THREAD, columnar.MAX_EVAL_THREADS
    columnar.MIN_EVENTS_PER_THREAD, columnar.MAX_EVAL_THREADS = 1, threads
    try:
        fast = read_jsonl(data, (("k",),), ("t",), plan.columns())
        try:
            got = columnar.answer_json(plan, fast, None, None, None, threads=threads)
        except Exception as exc:
            got = type(exc)
    finally:
        columnar.MIN_EVENTS_PER_THREAD, columnar.MAX_EVAL_THREADS = saved
    assert [(b.line, b.reason) for b in fast.bad] == [(b.line, b.reason) for b in exact.bad]
    assert fast.key_names == exact.key_names
    for a, b in ((fast.events.key, exact.events.key), (fast.events.time, exact.events.time),
                 (fast.events.frame.origin, exact.events.frame.origin)):
        assert a.tolist() == b.tolist()
    assert got == expected


def test_key_ranges_keep_the_whole_frames_horizon(monkeypatch):
    """A crossing just past the frame's horizon (TIME_LIMIT after the earliest key's first event) is
    'never' for every key, also in a key range whose own first event is later."""
    from timeline.dsl.spans import TIME_LIMIT

    late = TIME_LIMIT - 10
    data = b"\n".join(msgspec.json.encode(e) for e in [
        {"k": "a", "t": 0, "s": "x"}, {"k": "a", "t": 5, "s": "y"},
        {"k": "b", "t": late, "s": "x"}, {"k": "b", "t": late + 1, "s": "x"}])
    plan = compile_expression("duration_in_cur_state(latest_event_to_state(s)) >= 100")
    decoded = decode_jsonl(data, (("k",),), ("t",), plan.columns())
    expected = msgspec.json.encode(run_eval(plan, decoded, None, None, None))
    monkeypatch.setattr(columnar, "MIN_EVENTS_PER_THREAD", 1)
    assert columnar.answer_json(plan, decoded, None, None, None, threads=2) == expected
    assert b'"b":[{"start":%d,"end":null,"value":false}]' % late in expected


@settings(max_examples=150, deadline=None)
@given(n_keys=st.integers(1, 40), n=st.integers(0, 300), parts=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_sorting_in_key_ranges_gives_event_frame_builds_frame(n_keys, n, parts, seed):
    from concurrent.futures import ThreadPoolExecutor

    from timeline.dsl.events import CodedColumn, EventFrame

    rng = np.random.default_rng(seed)
    n = max(n, n_keys)
    key = np.concatenate([np.arange(n_keys), rng.integers(0, n_keys, n - n_keys)])
    rng.shuffle(key)
    time = np.sort(rng.integers(0, 1000, n))
    time[rng.random(n) < 0.2] -= rng.integers(0, 50)  # some late, some equal times
    columns = {("s",): CodedColumn(rng.integers(-1, 3, n).astype(np.int32), ["x", "y", "z"])}
    expected = EventFrame.build(key, time, columns, n_keys=n_keys)
    with ThreadPoolExecutor(parts) as pool:
        got = columnar.sorted_events(key, time, columns, n_keys, pool, parts)
    assert got.key.tolist() == expected.key.tolist()
    assert got.time.tolist() == expected.time.tolist()
    assert got.frame.origin.tolist() == expected.frame.origin.tolist()
    assert got.column(("s",)).codes.tolist() == expected.column(("s",)).codes.tolist()
