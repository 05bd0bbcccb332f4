"""`sample-event-producer` (and `timeline produce`): write generated sessions to Pulsar.

    sample-event-producer --sessions 1000 --out-of-order 0.1 --rate 5000

generates a scenario's events (seeded, so a run can be repeated exactly) and
sends them to a topic, one JSON message per event keyed by session id, in the
generator's arrival order. Scenarios are functions in `SCENARIOS`; adding one
(e.g. `liftwing`) is a new entry there, and `--scenario` accepts it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Callable
from typing import Any

from timeline.dsl.errors import UsageError
from timeline.producers.pulsar_producer import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_TOPIC,
    ProduceInterrupted,
    ProgressBar,
    PulsarUnavailable,
    TopicRecord,
    open_client,
    produce_sessions,
)
from timeline.runtime.settings import add_endpoint_options, endpoints

__all__ = ["SCENARIOS", "add_producer_options", "main", "producer_command", "video_scenario"]

# (sessions, seed, out_of_order, start_ms or None for "recent") -> JSON records in arrival order,
# each with a "session_id" (the partition key), or `TopicRecord`s that name their own topic and key.
Scenario = Callable[[int, int, float, int | None], list[dict[str, Any]] | list[TopicRecord]]


def video_scenario(sessions: int, seed: int, out_of_order: float, start_ms: int | None) -> list[dict[str, Any]]:
    """Video-player sessions (`producers.video_sessions`); start_ms None: the last event is now."""
    from timeline.producers.video_sessions import generate_sessions

    if start_ms is not None:
        return generate_sessions(sessions, seed=seed, out_of_order=out_of_order, start_ms=start_ms).to_records()
    # Timestamps are start_ms plus offsets that do not depend on it, so generating at 0 and
    # shifting is the same as generating at the shifted start (without generating twice).
    events = generate_sessions(sessions, seed=seed, out_of_order=out_of_order, start_ms=0)
    if len(events):
        shift = time.time_ns() // 1_000_000 - int(events.ts.max())
        events = dataclasses.replace(events, ts=events.ts + shift)
    return events.to_records()


def liftwing_scenario(sessions: int, seed: int, out_of_order: float, start_ms: int | None) -> list[TopicRecord]:
    """The LiftWing lifecycle (`producers.liftwing`): `sessions` pages; every event to its stream's topic."""
    from timeline.producers.liftwing import liftwing_scenario as scenario

    return scenario(sessions, seed, out_of_order, start_ms)


SCENARIOS: dict[str, Scenario] = {
    "video": video_scenario,
    "liftwing": liftwing_scenario,
}


# --- option parsing --------------------------------------------------------------------------


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction between 0 and 1 (e.g. 0.1 for 10%)")
    return value


def _non_negative(kind: type, what: str) -> Callable[[str], Any]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value >= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def add_producer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--topic", default=DEFAULT_TOPIC, help=f"Pulsar topic to write to (default {DEFAULT_TOPIC})")
    p.add_argument("--scenario", default="video", choices=sorted(SCENARIOS),
                   help="what to generate (default video: video-player sessions)")
    p.add_argument("--sessions", metavar="N", type=_non_negative(int, "a whole number >= 0"), default=1000,
                   help="number of sessions, about 50 events each (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="random seed: the same seed gives the same events (default 0)")
    p.add_argument("--out-of-order", metavar="FRACTION", type=_fraction, default=0.1,
                   help="share of events that arrive late, 0..1 (default 0.1)")
    p.add_argument("--rate", metavar="EVENTS_PER_S", type=_non_negative(float, "a number of events per second >= 0"),
                   default=0.0, help="send at most this many events per second (default 0: as fast as possible)")
    p.add_argument("--start-ms", metavar="EPOCH_MS", type=int, default=None,
                   help="timestamp of the first session start, in epoch ms (default: chosen so that the last "
                        "event is now, i.e. the data looks recent)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="show a progress bar on stderr (default: only when stderr is a terminal)")
    p.add_argument("--connect-timeout", metavar="SECONDS", type=_positive_seconds, default=DEFAULT_CONNECT_TIMEOUT_S,
                   help=f"give up on an unreachable Pulsar after this long (default {DEFAULT_CONNECT_TIMEOUT_S:g})")
    p.add_argument("-v", "--verbose", action="store_true", help="show the Pulsar client's own log on stderr")
    add_endpoint_options(p, temporal=False, store=False)
    p.set_defaults(handler=producer_command)


def _check(args: argparse.Namespace) -> None:
    """The parser's checks again, for a Namespace built by code rather than by the parser."""
    scenario = getattr(args, "scenario", "video")
    if scenario not in SCENARIOS:
        raise UsageError(f"unknown --scenario {scenario!r}: choose from {', '.join(sorted(SCENARIOS))}")
    if not 0.0 <= args.out_of_order <= 1.0:
        raise UsageError(f"--out-of-order {args.out_of_order!r} is not a fraction between 0 and 1")
    if args.sessions < 0:
        raise UsageError(f"--sessions {args.sessions!r} must be >= 0")
    if not args.rate >= 0:
        raise UsageError(f"--rate {args.rate!r} must be >= 0 (0: as fast as possible)")


# --- the command -----------------------------------------------------------------------------


def producer_command(args: argparse.Namespace) -> int:
    """Generate the scenario's events and send them; 0 when all were stored, 130 on Ctrl-C.

    User errors (bad options, Pulsar unreachable) raise `TimelineError`s for the caller
    (`cli.main`) to print and turn into exit code 2.
    """
    _check(args)
    records = SCENARIOS[getattr(args, "scenario", "video")](args.sessions, args.seed, args.out_of_order,
                                                             args.start_ms)
    url = endpoints(args).pulsar
    show = args.progress if getattr(args, "progress", None) is not None else sys.stderr.isatty()
    bar = ProgressBar(sys.stderr) if show else None
    timeout = getattr(args, "connect_timeout", DEFAULT_CONNECT_TIMEOUT_S)
    client = open_client(url, timeout, verbose=getattr(args, "verbose", False))
    try:
        try:
            stats = produce_sessions(client, args.topic, records, rate=args.rate, progress=bar)
        finally:
            if bar is not None:
                bar.close()
    except ProduceInterrupted as exc:
        print(exc.stats.summary(), flush=True)
        print(f"interrupted: stopped after {exc.stats.events:,} of {len(records):,} events; everything sent "
              f"before Ctrl-C was flushed to {args.topic}", file=sys.stderr)
        return 130
    except PulsarUnavailable as exc:
        if not exc.unreachable:
            raise PulsarUnavailable(f"Pulsar at {url} refused a producer on topic {args.topic}: {exc.reason}",
                                    exc.reason) from None
        raise PulsarUnavailable(
            f"cannot reach Pulsar at {url} (no answer within {timeout:g} s: {exc.reason}); start the embedded "
            "stack with `timeline up`, or pass --pulsar URL (or set TIMELINE_PULSAR)", exc.reason, True) from None
    finally:
        client.close()
    print(stats.summary(), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m timeline.cli.producer`: the same as the `sample-event-producer` command."""
    from timeline.cli.main import _run, _single

    return _run(_single("sample-event-producer", add_producer_options,
                        "Write generated sample events (one JSON message per event) to a Pulsar topic."), argv)


if __name__ == "__main__":
    sys.exit(main())
