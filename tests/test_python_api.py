"""The Python API: `timeline.evaluate` over pandas, polars and Arrow, with no server."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

import timeline

ROOT = Path(__file__).resolve().parents[1]
CIR = (ROOT / "examples" / "cir.tl").read_text()
SESSION = ROOT / "examples" / "cir_session.jsonl"
RECORDS = [json.loads(line) for line in SESSION.read_text().splitlines() if line.strip()]
CIR_ROWS = [(1000, 7000, 0, 0.0), (7000, 9000, 0, 1.0), (9000, None, 2000, 0.0)]


def rows(table: pa.Table) -> list[tuple]:
    return [(r["start"], r["end"], r["value"], r["slope"]) for r in table.to_pylist()]


def test_importing_timeline_loads_no_engine_and_evaluating_needs_no_runtime():
    code = (
        "import sys, timeline\n"
        "heavy = ['numpy', 'pyarrow', 'temporalio', 'pulsar', 'fastapi']\n"
        "assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]\n"
        "out = timeline.evaluate('has_existed(x == 1)', [{'k': 'a', 't': 1, 'x': 1}], key='k', time='t')\n"
        "assert out.to_pylist()[0]['value'] is True\n"
        "assert not [m for m in ('temporalio', 'pulsar', 'fastapi') if m in sys.modules]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_pandas_in_pandas_out():
    out = timeline.evaluate(CIR, pd.DataFrame(RECORDS), key="session_id", time="ts")
    assert isinstance(out, pd.DataFrame)
    assert list(out.columns) == ["key", "node", "start", "end", "value", "slope"]
    assert rows(pa.Table.from_pandas(out)) == CIR_ROWS
    assert out["end"].isna().tolist() == [False, False, True]


def test_polars_in_polars_out_and_values_at():
    df = pl.DataFrame(RECORDS)
    out = timeline.evaluate(CIR, df, key="session_id", time="ts")
    assert isinstance(out, pl.DataFrame)
    assert rows(out.to_arrow()) == CIR_ROWS
    at = timeline.evaluate(CIR, df, key="session_id", time="ts", at="1970-01-01T00:00:12Z")
    assert at.select("key", "time", "value").rows() == [("s1", 12000, 2000)]


def test_arrow_in_arrow_out_with_datetimes_and_clipping():
    table = pa.Table.from_pylist(RECORDS)
    times = pa.array(pd.to_datetime(table.column("ts").to_numpy(), unit="ms", utc=True))
    table = table.set_column(table.column_names.index("ts"), "ts", times)
    out = timeline.evaluate(CIR, table, key="session_id", time="ts", start=8000, end=10000)
    assert isinstance(out, pa.Table)
    assert rows(out) == [(8000, 9000, 1000, 1.0), (9000, 10000, 2000, 0.0)]


def test_same_answer_as_timeline_eval(capsys):
    from timeline.cli.main import main

    assert main(["eval", f"@{ROOT / 'examples' / 'cir.tl'}", "--events", str(SESSION), "--key", "session_id",
                 "--time", "ts"]) == 0
    printed = json.loads(capsys.readouterr().out)["s1"]
    out = timeline.evaluate(CIR, SESSION, key="session_id", time="ts", output="arrow")
    assert [(s["start"], s["end"], s["value"], s["slope"]) for s in printed] == rows(out)


def test_aggregation_gives_one_row_per_group():
    expr = ('duration_where(latest_event_to_state(playerStateChange) == "buffer") '
            "| aggregate(group_by(cdn), count, sum, max)")
    more = [{"session_id": "s2", "ts": 1, "cdn": "fastly"}, {"session_id": "s1", "ts": 3000, "cdn": "fastly"},
            {"session_id": "s3", "ts": 1, "cdn": "akamai"}]
    out = timeline.evaluate(expr, pd.DataFrame(RECORDS + more), key="session_id", time="ts", at=9000)
    assert out.to_dict("records") == [{"group": "akamai", "count": 1, "sum": 0, "max": 0},
                                      {"group": "fastly", "count": 2, "sum": 4000, "max": 4000}]


def test_mistakes_are_timeline_errors():
    df = pd.DataFrame({"k": ["a", None], "t": [1, 2], "x": [1, 2]})
    with pytest.raises(timeline.TimelineError, match=r"row 2: no key at 'k'.*bad_rows='skip'"):
        timeline.evaluate("has_existed(x == 1)", df, key="k", time="t")
    with pytest.warns(UserWarning, match="left out 1 row"):
        out = timeline.evaluate("has_existed(x == 1)", df, key="k", time="t", bad_rows="skip")
    assert out["key"].tolist() == ["a"]
    with pytest.raises(timeline.TimelineError, match="syntax error"):
        timeline.evaluate("has_existed(x = 1)", df, key="k", time="t")
    with pytest.raises(timeline.TimelineError, match="not a time"):
        timeline.evaluate("has_existed(x == 1)", df, key="k", time="t", at="soon")
    with pytest.raises(timeline.TimelineError, match="pandas or polars DataFrame"):
        timeline.evaluate("has_existed(x == 1)", {"k": 1}, key="k", time="t")


def test_a_missing_column_is_named():
    with pytest.raises(timeline.TimelineError, match=r"no time column 'when'.*its columns: k, t, x"):
        timeline.evaluate("has_existed(x == 1)", pd.DataFrame({"k": ["a"], "t": [1], "x": [1]}), key="k", time="when")


def test_mixed_kind_columns_compare_by_kind():
    """An object column mixing 1, "1" and True cannot be one Arrow type: it is read value by value."""
    df = pd.DataFrame({"k": ["a", "b", "c", "d"], "t": [1, 2, 3, 4], "x": [1, "1", True, None]})
    out = timeline.evaluate("has_existed(x == 1)", df, key="k", time="t", at=10)
    assert dict(zip(out["key"], out["value"])) == {"a": True, "b": False, "c": False, "d": False}
    records = [{"k": "a", "t": 1, "x": 1}, {"k": "a", "t": 2, "x": "1"}]
    out = timeline.evaluate("latest_event_to_state(x)", records, key="k", time="t", output="arrow")
    assert out.column("value").to_pylist() == ['1', '"1"']  # mixed kinds are written as JSON text


def test_composite_keys_from_polars():
    df = pl.DataFrame({"wiki": ["en", "en", "de"], "page": [1, 2, 1], "t": [1, 2, 3], "x": [1, 1, 1]})
    out = timeline.evaluate("has_existed(x == 1)", df, key="wiki,page", time="t", at=5)
    assert out.select("key", "value").rows() == [("en:1", True), ("en:2", True), ("de:1", True)]
