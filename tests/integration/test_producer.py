"""`sample-event-producer` against a real pulsar-lite broker (no mocks): every
generated event arrives once, in the generator's arrival order, keyed by session."""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import msgspec
import pulsar
import pytest
from runtime_helpers import TopicReader

from timeline.cli.producer import (
    SCENARIOS,
    add_producer_options,
    main,
    producer_command,
    video_scenario,
)
from timeline.dsl.errors import UsageError
from timeline.producers.pulsar_producer import (
    ProgressBar,
    due_time,
    open_client,
    produce_sessions,
    render_progress,
)
from timeline.producers.video_sessions import generate_sessions

ROOT = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(
    r"produced ([\d,]+) events from ([\d,]+) sessions in [\d.]+ s \(([\d,]+) events/s\) to topic (\S+)")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sample-event-producer")
    add_producer_options(p)
    return p


def _topic() -> str:
    return f"producer-{uuid.uuid4().hex[:10]}"


class Reader(TopicReader):
    """A TopicReader with a client of its own."""

    def __init__(self, url: str, topic: str):
        self.client = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
        super().__init__(self.client, topic)

    def close(self) -> None:
        self.consumer.close()
        self.client.close()


@pytest.fixture
def reader_for(pulsar_server):
    readers = []

    def make(topic: str) -> Reader:
        readers.append(Reader(pulsar_server.address, topic))
        return readers[-1]

    yield make
    for r in readers:
        r.close()


# --- end to end --------------------------------------------------------------------------------


def test_every_event_arrives_in_arrival_order_keyed_by_session(pulsar_server, reader_for, capsys):
    topic = _topic()
    reader = reader_for(topic)
    args = _parser().parse_args(["--topic", topic, "--sessions", "50", "--seed", "3", "--out-of-order", "0.3",
                                 "--start-ms", "1700000000000", "--pulsar", pulsar_server.address, "--progress"])
    assert producer_command(args) == 0

    expected = generate_sessions(50, seed=3, out_of_order=0.3).to_records()
    messages = reader.take(len(expected))
    reader.assert_no_more()
    assert [msgspec.json.decode(m.data()) for m in messages] == expected
    assert [m.partition_key() for m in messages] == [r["session_id"] for r in expected]
    # The late events really are late on the topic: some event has a smaller ts than one before it.
    ts = [r["ts"] for r in expected]
    assert any(b < a for a, b in zip(ts, ts[1:]))

    out, err = capsys.readouterr()
    summary = SUMMARY.search(out)
    assert summary, out
    assert summary.group(1) == f"{len(expected):,}"
    assert summary.group(2) == "50"
    assert summary.group(4) == topic
    assert f"100% {len(expected):,}/{len(expected):,} events" in err  # --progress forced on a non-TTY


def test_produce_sessions_paces_on_a_fixed_schedule(pulsar_server, reader_for):
    """The real sending loop with a fake clock: it sleeps until event i's due time
    (i / rate after the start), and after a stall it catches up instead of drifting."""
    rate = 100.0
    records = generate_sessions(3, seed=1, start_ms=0).to_records()
    n = len(records)

    class FakeClock:
        def __init__(self, stall_at: int | None):
            self.now = 1000.0
            self.targets: list[float] = []  # what each sleep slept until, relative to the start
            self.stall_at = stall_at

        def __call__(self) -> float:
            return self.now

        def sleep(self, seconds: float) -> None:
            assert seconds > 0
            self.now += seconds
            self.targets.append(self.now - 1000.0)
            if len(self.targets) == self.stall_at:
                self.now += 0.25  # the process was descheduled: 25 events are overdue now

    steady = FakeClock(stall_at=None)
    topic = _topic()
    reader = reader_for(topic)
    client = open_client(pulsar_server.address)
    try:
        stats = produce_sessions(client, topic, records, rate=rate, clock=steady, sleep=steady.sleep)
        stalled = FakeClock(stall_at=10)
        stats2 = produce_sessions(client, topic, iter(records), rate=rate, clock=stalled, sleep=stalled.sleep)
    finally:
        client.close()

    assert steady.targets == pytest.approx([due_time(i, rate) for i in range(1, n)])
    assert stats.events == n and stats.sessions == 3 and stats.topic == topic
    assert stats.seconds == pytest.approx(due_time(n - 1, rate))
    # After the stall, the overdue events go out without sleeping, then the schedule resumes unchanged.
    assert stalled.targets == pytest.approx([due_time(i, rate) for i in range(1, 11)]
                                            + [due_time(i, rate) for i in range(36, n)])
    assert stats2.events == n
    assert len(reader.take(2 * n)) == 2 * n


def test_due_time_is_i_over_rate():
    assert due_time(0, 250) == 0
    assert due_time(1, 250) == 0.004
    assert due_time(10_000, 250) == 40.0  # an absolute schedule: no accumulated rounding
    assert [due_time(i, 0) for i in range(3)] == [0, 0, 0]  # rate 0: as fast as possible
    assert all(due_time(i, 7) < due_time(i + 1, 7) for i in range(100))


def test_ctrl_c_flushes_what_was_sent_and_exits_130(pulsar_server, reader_for):
    topic = _topic()
    reader = reader_for(topic)
    proc = subprocess.Popen(
        [sys.executable, "-m", "timeline.cli.producer", "--topic", topic, "--sessions", "200", "--rate", "200",
         "--pulsar", pulsar_server.address, "--no-progress"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = reader.take(1, timeout_ms=30_000)  # it is sending (~10,000 events at 200/s would take ~50 s)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "flushed" in err
    summary = SUMMARY.search(out)
    assert summary, out
    sent = int(summary.group(1).replace(",", ""))
    assert 0 < sent < len(generate_sessions(200, seed=0).to_records())
    reader.take(sent - len(first))  # everything reported as sent is on the topic ...
    reader.assert_no_more()  # ... and nothing else


# --- options and errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--out-of-order", "2"], "argument --out-of-order: '2' is not a fraction between 0 and 1"),
        (["--out-of-order", "-0.1"], "is not a fraction between 0 and 1"),
        (["--scenario", "nope"], "argument --scenario: invalid choice: 'nope'"),
        (["--rate", "-5"], "argument --rate: '-5' is not a number of events per second >= 0"),
        (["--sessions", "many"], "argument --sessions: 'many' is not a whole number >= 0"),
    ],
)
def test_bad_options_exit_2_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_values_in_a_namespace_built_by_code_are_user_errors(capsys):
    args = _parser().parse_args([])
    args.out_of_order = 2.0
    with pytest.raises(UsageError, match="--out-of-order 2.0 is not a fraction between 0 and 1"):
        producer_command(args)
    args = _parser().parse_args([])
    args.scenario = "nope"
    with pytest.raises(UsageError, match="unknown --scenario 'nope': choose from liftwing, video"):
        producer_command(args)


def test_unreachable_pulsar_exits_2_naming_the_url():
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "timeline.cli.producer", "--pulsar", "pulsar://127.0.0.1:1",
                           "--sessions", "3"], cwd=ROOT, capture_output=True, text=True, timeout=45)
    assert proc.returncode == 2, proc.stderr
    assert "cannot reach Pulsar at pulsar://127.0.0.1:1" in proc.stderr
    assert "timeline up" in proc.stderr and "--pulsar URL" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert time.monotonic() - started < 40  # default --connect-timeout is 10 s; generous for slow machines


def test_a_malformed_pulsar_url_is_a_user_error(capsys):
    assert main(["--pulsar", "localhost:6650", "--sessions", "1"]) == 2
    assert "'localhost:6650' is not a usable Pulsar service URL" in capsys.readouterr().err


# --- pure parts --------------------------------------------------------------------------------


def test_default_start_makes_the_data_recent_and_is_a_pure_shift():
    fixed = generate_sessions(20, seed=5, out_of_order=0.2, start_ms=0).to_records()
    before = time.time() * 1000
    recent = video_scenario(20, 5, 0.2, None)
    after = time.time() * 1000
    shift = recent[0]["ts"] - fixed[0]["ts"]
    assert recent == [{**r, "ts": r["ts"] + shift} for r in fixed]
    assert before <= max(r["ts"] for r in recent) <= after + 1  # the last event is "now"
    assert SCENARIOS["video"] is video_scenario
    assert video_scenario(0, 0, 0.1, None) == []


def test_progress_line():
    assert render_progress(4200, 10_000, 4200 / 9870, width=10) == \
        "[####......]  42% 4,200/10,000 events 9,870 ev/s"
    assert render_progress(0, 0, 0.0, width=4) == "[####] 100% 0/0 events 0 ev/s"

    class Stream:
        text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

    stream = Stream()
    bar = ProgressBar(stream, width=4)
    bar(1, 1000, 0.5)
    bar(1000, 1000, 1.0)
    bar.close()
    lines = stream.text.split("\r")[1:]
    assert lines[0] == "[....]   0% 1/1,000 events 2 ev/s"
    assert lines[1] == "[####] 100% 1,000/1,000 events 1,000 ev/s\n"
