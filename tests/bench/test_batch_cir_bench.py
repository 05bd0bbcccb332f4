"""The batch benchmark runs and its engines agree (speed is for bench/, not tests)."""

from bench.batch_cir import main


def test_benchmark_engines_agree_on_small_input(capsys):
    assert main(["--events", "20000", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "sessions agree" in out and "ratio timeline batch / duckdb" in out
