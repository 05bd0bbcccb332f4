"""Rate-limited logs, the feeder's dead-letter log (one line per message), JSON log lines."""

from __future__ import annotations

import io
import json
import logging

from timeline.feeder.metrics import DEAD_LETTERED, FeederMetrics
from timeline.runtime.telemetry import RateLimitedLog, configure_logging


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def capture(name: str) -> tuple[logging.Logger, list[str]]:
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    logger = logging.getLogger(name)
    logger.handlers[:] = [Keep()]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, lines


def test_rate_limited_log_holds_back_repeats_and_says_how_many():
    logger, lines = capture("test.ratelimit")
    clock = Clock()
    rl = RateLimitedLog(logger, interval_s=10, clock=clock)
    assert rl.log(logging.WARNING, "a", "problem %s", 1)
    for i in range(5):
        clock.now += 1
        assert not rl.log(logging.WARNING, "a", "problem %s", i)
    assert rl.log(logging.WARNING, "b", "other")  # another key is not held back
    clock.now = 11
    assert rl.log(logging.WARNING, "a", "problem again")
    assert lines == ["problem 1", "other", "problem again (and 5 more like it in the last 10s, not logged)"]


class FakeMessage:
    def __init__(self, mid: str, topic: str = "persistent://public/default/t"):
        self.mid, self.topic = mid, topic

    def message_id(self) -> str:
        return self.mid

    def topic_name(self) -> str:
        return self.topic


def test_a_message_several_timelines_reject_is_one_line_and_counted_once():
    logger, lines = capture("test.feeder")
    metrics = FeederMetrics("t-unit", logger)
    before = DEAD_LETTERED.labels("t-unit")._value.get()
    m1, m2 = FakeMessage("(1,2,-1,0)"), FakeMessage("(1,3,-1,0)")
    metrics.dead_lettered([(m1, "no key at 'id'", "a"), (m1, "no key at 'id'", "b"),
                           (m2, "no key at 'id'", "a"), (m2, "no key at 'id'", "b")])
    assert DEAD_LETTERED.labels("t-unit")._value.get() - before == 2  # messages, not (message, timeline)
    # One line for m1 naming both timelines; m2 has the same kind of problem: held back (rate limit).
    assert lines == ["dead-lettered message (1,2,-1,0) from persistent://public/default/t: no key at 'id' "
                     "(timelines: a, b)"]


def test_json_log_lines():
    configure_logging("INFO", "json")
    stream = io.StringIO()
    root = logging.getLogger()
    root.handlers[0].setStream(stream)
    try:
        logging.getLogger("timeline.test").warning("hello %s", "world", extra={"topic": "t"})
        record = json.loads(stream.getvalue())
        assert record["message"] == "hello world" and record["level"] == "WARNING"
        assert record["logger"] == "timeline.test" and record["topic"] == "t" and "time" in record
    finally:
        configure_logging("WARNING", "text")
