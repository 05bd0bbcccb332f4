"""`timeline eval` and `timeline plan` past the documented limits: bad lines with
their numbers (also in --dead-letter), DSL errors, never a traceback (issue 9,
items 5 and 6)."""

import json

from timeline.cli.main import main
from timeline.dsl.limits import MAX_EVENT_BYTES, MAX_TIME_MS


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


GOOD = '{"k": "a", "t": 1, "n": 1}'
DEEP_ARRAY = '{"k": "a", "t": 2, "n": ' + "[" * 1000 + "]" * 1000 + "}"
DEEP_OBJECT = '{"k": "a", "t": 3, "x": ' + '{"a": ' * 1000 + "1" + "}" * 1000 + "}"
HUGE_TIME = '{"k": "a", "t": 99999999999999999999999, "n": 1}'
INT64_EDGE_TIME = '{"k": "b", "t": 9223372036854775807, "n": 1}'
PAST_RANGE = '{"k": "b", "t": %d, "n": 1}' % (MAX_TIME_MS + 1)
TOO_BIG = '{"k": "a", "t": 4, "pad": "%s"}' % ("x" * MAX_EVENT_BYTES)


def test_bad_lines_past_the_limits_are_reported_with_numbers(capsys, tmp_path):
    lines = [GOOD, DEEP_ARRAY, DEEP_OBJECT, HUGE_TIME, INT64_EDGE_TIME, PAST_RANGE, TOO_BIG]
    data = tmp_path / "e.jsonl"
    data.write_text("\n".join(lines) + "\n")
    code, out, err = run(capsys, "eval", "latest_event_to_state(n) > 0", "--events", str(data),
                         "--key", "k", "--time", "t")
    assert code == 1 and out == "" and "Traceback" not in err
    assert f"{data}:2: nested more than 64 levels deep" in err
    assert f"{data}:3: nested more than 64 levels deep" in err
    assert f"{data}:4: time at 't' is out of range" in err
    assert f"{data}:5: time at 't' is out of range" in err
    assert "6 bad line(s)" in err  # the first five are shown

    dead = tmp_path / "dead.jsonl"
    code, out, err = run(capsys, "eval", "latest_event_to_state(n) > 0", "--events", str(data),
                         "--key", "k", "--time", "t", "--dead-letter", str(dead))
    assert code == 0, err
    assert json.loads(out) == {"a": [{"start": 1, "end": None, "value": True}]}
    records = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [r["line"] for r in records] == [2, 3, 4, 5, 6, 7]
    assert "out of range" in records[4]["reason"]
    assert records[5]["reason"] == f"the event is {len(TOO_BIG):,} bytes; the limit is {MAX_EVENT_BYTES:,}"


def test_times_at_the_range_edges_are_accepted(capsys, tmp_path):
    data = tmp_path / "e.jsonl"
    data.write_text('{"k": "a", "t": %d}\n{"k": "a", "t": "9999-12-31T23:59:59.999Z"}\n' % (MAX_TIME_MS - 5))
    code, out, err = run(capsys, "eval", "latest_event_to_state(t) > 0", "--events", str(data),
                         "--key", "k", "--time", "t")
    assert code == 0, err
    assert json.loads(out) == {"a": [{"start": MAX_TIME_MS - 5, "end": MAX_TIME_MS, "value": True},
                                     {"start": MAX_TIME_MS, "end": None, "value": None}]}


def test_500_nested_nots_is_a_dsl_error_from_plan_and_eval(capsys, tmp_path):
    expr = "!" * 500 + "has_existed(x == 1)"
    code, out, err = run(capsys, "plan", expr)
    assert code == 2 and "nested more than" in err and "Traceback" not in err and "RecursionError" not in err
    data = tmp_path / "e.jsonl"
    data.write_text(GOOD + "\n")
    code, out, err = run(capsys, "eval", expr, "--events", str(data), "--key", "k", "--time", "t")
    assert code == 2 and "nested more than" in err


def test_composite_keys_do_not_collide(capsys, tmp_path):
    data = tmp_path / "e.jsonl"
    data.write_text('{"k": "a:b", "w": "c", "t": 1, "x": 1}\n{"k": "a", "w": "b:c", "t": 2, "x": 2}\n'
                    '{"k": "enwiki", "w": 123, "t": 3, "x": 3}\n')
    code, out, err = run(capsys, "eval", "latest_event_to_state(x)", "--events", str(data),
                         "--key", "k,w", "--time", "t")
    assert code == 0, err
    assert json.loads(out) == {
        "a\\:b:c": [{"start": 1, "end": None, "value": 1}],
        "a:b\\:c": [{"start": 2, "end": None, "value": 2}],
        "enwiki:123": [{"start": 3, "end": None, "value": 3}],  # plain parts print as before
    }


def test_the_same_report_from_the_arrow_path_and_the_exact_decoder(capsys, tmp_path, monkeypatch):
    """Lines past the size or nesting limit in a file Arrow reads without complaint (the deep
    nesting is in a field no expression reads): the same bad lines, reasons and answer as when
    the exact decoder reads the file."""
    import timeline.dsl.columnar as columnar

    deep = '{"k": "a", "t": 3, "x": ' + '{"a": ' * 64 + "1" + "}" * 65
    too_big = '{"k": "b", "t": 4, "pad": "%s"}' % ("x" * MAX_EVENT_BYTES)
    lines = [GOOD, '{"k": "a", "t": 2, "n": 2}', deep, too_big, '{"k": "b", "t": 5, "n": 3}']
    data = tmp_path / "e.jsonl"
    data.write_text("\n".join(lines) + "\n")

    def reports():
        argv = ["eval", "latest_event_to_state(n)", "--events", str(data), "--key", "k", "--time", "t"]
        failed = run(capsys, *argv)
        dead = tmp_path / "dead.jsonl"
        went_on = run(capsys, *argv, "--dead-letter", str(dead))
        return failed, went_on, dead.read_text()

    fast = reports()
    monkeypatch.setattr(columnar, "_arrow_events", lambda *args: None)  # the exact decoder only
    exact = reports()
    assert fast == exact
    (code, out, err), (code2, out2, _), dead = fast
    assert code == 1 and out == "" and f"{data}:3: nested more than 64 levels deep" in err
    assert f"{data}:4: the event is {len(too_big):,} bytes" in err
    assert code2 == 0 and json.loads(out2) == {"a": [{"start": 1, "end": 2, "value": 1},
                                                      {"start": 2, "end": None, "value": 2}],
                                               "b": [{"start": 5, "end": None, "value": 3}]}
    assert [json.loads(r)["line"] for r in dead.splitlines()] == [3, 4]


def test_a_file_with_only_a_too_deep_line_reports_it_from_either_path(capsys, tmp_path, monkeypatch):
    import timeline.dsl.columnar as columnar

    deep = '{"k": "a", "t": 3, "x": ' + "[" * 64 + "]" * 64 + "}"
    data = tmp_path / "e.jsonl"
    data.write_text("\n".join([GOOD, *[GOOD.replace('"t": 1', f'"t": {i}') for i in range(2, 80)], deep]))
    argv = ["eval", "latest_event_to_state(n)", "--events", str(data), "--key", "k", "--time", "t"]
    fast = run(capsys, *argv)
    monkeypatch.setattr(columnar, "_arrow_events", lambda *args: None)
    assert fast == run(capsys, *argv)
    assert fast[0] == 1 and f"{data}:80: nested more than 64 levels deep" in fast[2]
