"""`timeline eval` over Parquet, Arrow IPC and compressed JSON lines, and --output tables."""

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from timeline.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
CIR = f"@{ROOT / 'examples' / 'cir.tl'}"
SESSION = ROOT / "examples" / "cir_session.jsonl"
CIR_SPANS = [
    {"start": 1000, "end": 7000, "value": 0, "slope": 0},
    {"start": 7000, "end": 9000, "value": 0, "slope": 1},
    {"start": 9000, "end": None, "value": 2000, "slope": 0},
]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def session_table() -> pa.Table:
    return pa.Table.from_pylist([json.loads(line) for line in SESSION.read_text().splitlines() if line.strip()])


@pytest.fixture
def inputs(tmp_path):
    """The SPEC's CIR session in every input format."""
    table = session_table()
    pq.write_table(table, tmp_path / "s.parquet")
    feather.write_feather(table, tmp_path / "s.arrow")
    with pa.OSFile(str(tmp_path / "s.stream.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    (tmp_path / "s.jsonl.gz").write_bytes(gzip.compress(SESSION.read_bytes()))
    with pa.CompressedOutputStream(str(tmp_path / "s.jsonl.zst"), "zstd") as out:
        out.write(SESSION.read_bytes())
    return tmp_path


@pytest.mark.parametrize("name", ["s.parquet", "s.arrow", "s.stream.arrow", "s.jsonl.gz", "s.jsonl.zst"])
def test_every_input_format_gives_the_spec_answer(capsys, inputs, name):
    code, out, err = run(capsys, "eval", CIR, "--events", inputs / name, "--key", "session_id", "--time", "ts")
    assert code == 0, err
    assert json.loads(out) == {"s1": CIR_SPANS}


@pytest.mark.parametrize("suffix", [".parquet", ".arrow"])
def test_output_table_has_key_node_start_end_value_slope(capsys, tmp_path, suffix):
    target = tmp_path / f"spans{suffix}"
    code, out, err = run(capsys, "eval", CIR, "--events", SESSION, "--key", "session_id", "--time", "ts",
                         "--output", target)
    assert code == 0, err
    assert out == ""
    table = pq.read_table(target) if suffix == ".parquet" else feather.read_table(target)
    assert table.column_names == ["key", "node", "start", "end", "value", "slope"]
    rows = table.to_pylist()
    assert {r["node"] for r in rows} == {rows[0]["node"]} and rows[0]["node"].startswith("duration_where-")
    assert [{k: r[k] for k in ("start", "end", "value", "slope")} for r in rows] == CIR_SPANS
    assert {r["key"] for r in rows} == {"s1"}


def test_output_table_clips_and_values_at(capsys, tmp_path):
    target = tmp_path / "clipped.parquet"
    code, _, err = run(capsys, "eval", CIR, "--events", SESSION, "--key", "session_id", "--time", "ts",
                       "--from", "8000", "--to", "10000", "--output", target)
    assert code == 0, err
    assert [(r["start"], r["end"], r["value"], r["slope"]) for r in pq.read_table(target).to_pylist()] == [
        (8000, 9000, 1000, 1.0), (9000, 10000, 2000, 0.0)]
    code, _, err = run(capsys, "eval", "latest_event_to_state(playerStateChange)", "--events", SESSION,
                       "--key", "session_id", "--time", "ts", "--at", "8000", "--output", target)
    assert code == 0, err
    assert pq.read_table(target).to_pylist() == [
        {"key": "s1", "node": pq.read_table(target).column("node")[0].as_py(), "time": 8000, "value": "buffer"}]


def test_json_output_file_matches_stdout(capsys, tmp_path):
    target = tmp_path / "answer.json"
    code, _, _ = run(capsys, "eval", CIR, "--events", SESSION, "--key", "session_id", "--time", "ts",
                     "--output", target)
    assert code == 0
    assert json.loads(target.read_text()) == {"s1": CIR_SPANS}


def test_bad_rows_in_a_parquet_file_are_reported_by_row(capsys, tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"k": ["a", None, "b"], "t": [1, 2, None], "x": [1, 1, 2]}), path)
    code, out, err = run(capsys, "eval", "has_existed(x == 1)", "--events", path, "--key", "k", "--time", "t")
    assert code == 1 and out == ""
    assert f"{path}:2: no key at 'k'" in err and f"{path}:3: no usable time at 't'" in err
    dead = tmp_path / "dead.jsonl"
    code, out, _ = run(capsys, "eval", "has_existed(x == 1)", "--events", path, "--key", "k", "--time", "t",
                       "--dead-letter", dead)
    assert code == 0 and json.loads(out) == {"a": [{"start": 1, "end": None, "value": True}]}
    assert [json.loads(line)["line"] for line in dead.read_text().splitlines()] == [2, 3]


def test_bad_lines_in_gzipped_json_keep_their_numbers(capsys, tmp_path):
    path = tmp_path / "e.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"k": "a", "t": 1}\nnot json\n{"k": "a"}\n'))
    code, _, err = run(capsys, "eval", "has_existed(x == 1)", "--events", path, "--key", "k", "--time", "t")
    assert code == 1
    assert f"{path}:2: not valid JSON" in err and f"{path}:3: no usable time at 't'" in err


@pytest.mark.parametrize("argv,message", [
    (["--events", "/nonexistent.parquet"], "events file not found"),
    (["--events", "{tmp}/plain.jsonl.gz"], "not a valid gzip stream"),
    (["--events", "{tmp}/plain.parquet"], "cannot read"),
    (["--events", "{session}", "--output", "{tmp}/out.csv"], "give a .parquet, .arrow"),
])
def test_format_mistakes_are_usage_errors(capsys, tmp_path, argv, message):
    (tmp_path / "plain.jsonl.gz").write_text('{"k": 1}\n')
    (tmp_path / "plain.parquet").write_text('{"k": 1}\n')
    argv = [a.format(tmp=tmp_path, session=SESSION) for a in argv]
    code, _, err = run(capsys, "eval", "has_existed(x == 1)", "--key", "k", "--time", "t", *argv)
    assert code == 2, err
    assert message in err and "Traceback" not in err


def test_a_missing_key_or_time_column_names_the_columns_there(capsys, tmp_path):
    path = tmp_path / "e.parquet"
    pq.write_table(pa.table({"session": ["a"], "ts": [1]}), path)
    code, _, err = run(capsys, "eval", "has_existed(x == 1)", "--events", path, "--key", "session_id",
                       "--time", "ts")
    assert code == 2
    assert "no column 'session_id'" in err and "session, ts" in err
