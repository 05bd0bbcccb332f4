"""The feeder's Prometheus metrics and its dead-letter log (hooks called from feeder.py).

Metrics (prometheus-client's default registry; `timeline feeder --metrics-port` serves them):

    timeline_feeder_messages_total{topic}                  messages taken from the topic
    timeline_feeder_events_total{topic,timeline}           events routed to a timeline's leaves
    timeline_feeder_dead_lettered_total{topic}             messages dead-lettered (once per message)
    timeline_feeder_signals_total{topic,timeline}          signals sent (one per leaf per shard per batch)
    timeline_feeder_batch_messages{topic}                  messages per batch (histogram)
    timeline_feeder_batch_seconds{topic}                   decode + route + signal time per batch (histogram)
    timeline_feeder_lag_seconds{topic}                     now - publish time of the batch's newest message,
                                                           when its signals were accepted

The dead-letter log: a message that several timelines reject is one line (its timelines
listed), not one per timeline; the same reason again within `DEAD_LETTER_LOG_INTERVAL_S`
is not logged but counted, and the next line for it says how many were held back.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from timeline.runtime.telemetry import RateLimitedLog

DEAD_LETTER_LOG_INTERVAL_S = 10.0

MESSAGES = Counter("timeline_feeder_messages", "Messages taken from the source topic", ["topic"])
EVENTS = Counter("timeline_feeder_events", "Events routed to a timeline's leaf workflows", ["topic", "timeline"])
DEAD_LETTERED = Counter("timeline_feeder_dead_lettered", "Messages sent to the dead-letter topic (once each)",
                        ["topic"])
SIGNALS = Counter("timeline_feeder_signals", "Signals sent to leaf workflows", ["topic", "timeline"])
BATCH_MESSAGES = Histogram("timeline_feeder_batch_messages", "Messages per batch", ["topic"],
                           buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000))
BATCH_SECONDS = Histogram("timeline_feeder_batch_seconds", "Time to decode, route and signal a batch", ["topic"])
LAG_SECONDS = Gauge("timeline_feeder_lag_seconds",
                    "Now minus the publish time of the newest message of the last batch signalled", ["topic"])

_DIGITS = re.compile(r"\d+")


class FeederMetrics:
    """What one feeder counts; `batch_started` / `batch_signalled` around each batch."""

    def __init__(self, topic: str, logger: logging.Logger):
        self.topic = topic
        self.dead_log = RateLimitedLog(logger, DEAD_LETTER_LOG_INTERVAL_S)
        self._started = 0.0

    def batch_started(self, messages: list) -> float:
        """Count a batch's messages; returns when it started (for `batch_signalled`)."""
        MESSAGES.labels(self.topic).inc(len(messages))
        BATCH_MESSAGES.labels(self.topic).observe(len(messages))
        return time.monotonic()

    def batch_signalled(self, started: float, published: int, sends: list) -> None:
        """After Temporal accepted a batch's signals (batches are pipelined: each carries its own
        start). `sends`: (route, shard, buffer) per (timeline, shard), as the feeder holds them;
        `published`: the latest publish time (epoch ms) among the batch's messages."""
        BATCH_SECONDS.labels(self.topic).observe(time.monotonic() - started)
        for route, _shard, buf in sends:
            EVENTS.labels(self.topic, route.spec.name).inc(len(buf.keys))
            SIGNALS.labels(self.topic, route.spec.name).inc(len(route.plan.leaves))
        if published > 0:
            LAG_SECONDS.labels(self.topic).set(max(0.0, time.time() - published / 1000))

    def dead_lettered(self, dead: Iterable[tuple[Any, str, str | None]]) -> None:
        """Count and log dead-lettered messages: once per message, however many timelines rejected it."""
        per_message: dict[str, tuple[Any, list[tuple[str, str | None]]]] = {}
        for msg, reason, timeline in dead:
            per_message.setdefault(str(msg.message_id()), (msg, []))[1].append((reason, timeline))
        for mid, (msg, why) in per_message.items():
            DEAD_LETTERED.labels(self.topic).inc()
            reasons = list(dict.fromkeys(reason for reason, _ in why))
            timelines = sorted({t for _, t in why if t})
            # One kind of problem per rate-limit key: the reason without its numbers (positions, ids).
            key = _DIGITS.sub("#", reasons[0])[:200]
            self.dead_log.log(logging.WARNING, key, "dead-lettered message %s from %s: %s%s", mid,
                              msg.topic_name(), "; ".join(reasons),
                              f" (timelines: {', '.join(timelines)})" if timelines else "")
