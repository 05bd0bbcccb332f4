"""`timeline eval` / `timeline plan` as a user runs them: output, errors, exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from timeline.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
CIR = f"@{ROOT / 'examples' / 'cir.tl'}"
SESSION = str(ROOT / "examples" / "cir_session.jsonl")


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_spec_example_prints_the_cir_timeline_with_2000_ms(capsys):
    code, out, err = run(capsys, "eval", CIR, "--events", SESSION, "--key", "session_id", "--time", "ts")
    assert code == 0, err
    assert json.loads(out) == {"s1": [
        {"start": 1000, "end": 7000, "value": 0, "slope": 0},
        {"start": 7000, "end": 9000, "value": 0, "slope": 1},
        {"start": 9000, "end": None, "value": 2000, "slope": 0},
    ]}
    code, out, _ = run(capsys, "eval", CIR, "--events", SESSION, "--key", "session_id", "--time", "ts",
                       "--at", "1970-01-01T00:00:12Z")
    assert json.loads(out) == {"s1": 2000}


def test_stdin_and_from_to(capsys, monkeypatch, tmp_path):
    data = tmp_path / "e.jsonl"
    data.write_text('{"id": 1, "at": 0, "s": "a"}\n{"id": 1, "at": 10, "s": "b"}\n')
    code, out, _ = run(capsys, "eval", "latest_event_to_state(s)", "--events", str(data), "--key", "id",
                       "--time", "at", "--from", "5", "--to", "20")
    assert code == 0
    assert json.loads(out) == {"1": [{"start": 5, "end": 10, "value": "a"}, {"start": 10, "end": 20, "value": "b"}]}


def test_bad_lines_stop_without_dead_letter(capsys, tmp_path):
    data = tmp_path / "e.jsonl"
    data.write_text('{"k": "a", "t": 1}\nnot json\n{"k": "a"}\n{"t": 5}\n')
    code, out, err = run(capsys, "eval", "has_existed(x == 1)", "--events", str(data), "--key", "k", "--time", "t")
    assert code == 1 and out == ""
    assert f"{data}:2: not valid JSON" in err
    assert f"{data}:3: no usable time at 't'" in err
    assert f"{data}:4: no key at 'k'" in err
    assert "--dead-letter" in err


def test_dead_letter_sets_bad_lines_aside_and_goes_on(capsys, tmp_path):
    data = tmp_path / "e.jsonl"
    data.write_text('{"k": "a", "t": 1, "x": 1}\n{"k": "a", "t": "yesterday"}\n{"k": "b", "t": 3}\n')
    dead = tmp_path / "dead.jsonl"
    code, out, err = run(capsys, "eval", "has_existed(x == 1)", "--events", str(data), "--key", "k", "--time", "t",
                         "--dead-letter", str(dead))
    assert code == 0
    assert json.loads(out) == {"a": [{"start": 1, "end": None, "value": True}],
                               "b": [{"start": 3, "end": None, "value": False}]}
    [record] = [json.loads(line) for line in dead.read_text().splitlines()]
    assert record["line"] == 2 and "not epoch ms or ISO-8601" in record["reason"]
    assert record["raw"] == '{"k": "a", "t": "yesterday"}'


@pytest.mark.parametrize("argv,message", [
    (["eval", "has_existed(x = 1)", "--events", SESSION, "--key", "k", "--time", "t"], "1:15: syntax error"),
    (["eval", "has_existed(x == 1)", "--events", "/nonexistent.jsonl", "--key", "k", "--time", "t"],
     "events file not found"),
    (["eval", "has_existed(x == 1)", "--events", SESSION, "--key", "k", "--time", "t", "--at", "soon"],
     "--at 'soon' is not a time"),
    (["eval", "has_existed(x == 1)", "--events", SESSION, "--key", "a..b", "--time", "t"], "bad field path"),
    (["eval", "has_existed(x == 1)", "--events", SESSION, "--key", "session_id", "--time", "ts",
      "--from", "10", "--to", "5"], "must be before --to"),
    (["eval", "@/nonexistent.tl", "--events", SESSION, "--key", "k", "--time", "t"], "cannot read the expression"),
    (["plan", "duration_where(x == 1)"], "type error"),
])
def test_user_errors_exit_2_with_a_message(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_plan_prints_the_tree(capsys):
    code, out, _ = run(capsys, "plan", CIR)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("duration_where-") and "[derived, numeric]" in lines[0]
    assert sum("[leaf," in line for line in lines) == 3
    code, out, _ = run(capsys, "plan", CIR, "--json")
    plan = json.loads(out)
    assert plan["root"].startswith("duration_where-") and len(plan["nodes"]) == 7


def test_console_script_runs_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "timeline.cli.main", "plan", "has_existed("], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "ends too early" in proc.stderr and "Traceback" not in proc.stderr
