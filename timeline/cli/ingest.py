"""`timeline ingest-sse`: EventStreams (server-sent events) -> Pulsar topics, one per stream.

    timeline ingest-sse https://stream.wikimedia.org/v2/stream/mediawiki.page_change.v1 --limit 1000
    timeline ingest-sse recorded.sse --stream mediawiki.page_change.v1
    curl -s https://stream.wikimedia.org/v2/stream/mediawiki.revision-create | timeline ingest-sse -

Each event goes to the topic named after its stream (`sources.eventplatform.topic_for`);
canary events are dropped; invalid ones go to `eventstreams-dead-letter` with the reason.

A URL is followed live: when the connection drops it reconnects and resumes after the
last event received (`Last-Event-ID`). The last event id Pulsar has confirmed is kept in
a state file (default: .timeline/ingest-sse/, one per URL), so running the same command
again continues where the last run stopped; `--since` picks the start of a first run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from timeline.runtime.settings import add_endpoint_options, endpoints, home, whole_number_at_least
from timeline.sources.eventplatform import STREAMS

__all__ = ["add_ingest_options", "add_parsers", "ingest_command"]


_positive_int = whole_number_at_least(1)


def add_parsers(sub) -> None:
    """Add `ingest-sse` to the `timeline` subcommands."""
    p = sub.add_parser(
        "ingest-sse", help="read Wikimedia EventStreams (server-sent events) into Pulsar topics",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_ingest_options(p)


def add_ingest_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE",
                   help="a recorded SSE file, - for stdin, or an EventStreams URL "
                        "(https://stream.wikimedia.org/v2/stream/mediawiki.page_change.v1)")
    p.add_argument("--stream", metavar="NAME", action="append", dest="streams", default=None,
                   help="keep only this stream (repeatable; default: every known stream: "
                        f"{', '.join(STREAMS)})")
    p.add_argument("--no-validate", action="store_true",
                   help="do not validate events against their schemas (page key and meta.dt are still required)")
    p.add_argument("--limit", metavar="N", type=_positive_int, default=None,
                   help="stop after N events (a live stream runs until Ctrl-C otherwise)")
    live = p.add_argument_group("live streams (URL sources)")
    live.add_argument("--since", metavar="TIME",
                      help="start at this time (ISO-8601 or epoch ms; EventStreams' `since`) when there is no "
                           "saved position; default: now")
    live.add_argument("--last-event-id", metavar="ID",
                      help="resume after this event id (overrides the saved position)")
    live.add_argument("--state", metavar="FILE",
                      help="where the last confirmed event id is kept (default: one file per URL in "
                           "HOME/ingest-sse/)")
    live.add_argument("--no-resume", action="store_true",
                      help="ignore the saved position (it is still updated)")
    live.add_argument("--max-reconnects", metavar="N", type=int, default=None,
                      help="give up after N failed reconnects in a row (default: never)")
    add_endpoint_options(p, temporal=False, store=False)
    p.set_defaults(handler=ingest_command)


def ingest_command(args: argparse.Namespace) -> int:
    """Ingest SOURCE; 0 when every routed or dead-lettered event was stored, 130 on Ctrl-C.

    User errors (bad source or stream name, Pulsar unreachable) raise TimelineErrors
    for the caller (`cli.main`) to print and turn into exit code 2.
    """
    from timeline.producers.pulsar_producer import PulsarUnavailable, open_client
    from timeline.sources.eventplatform import topic_for
    from timeline.sources.ingest import IngestStats, ingest_sse, open_source

    for name in args.streams or []:
        topic_for(name)  # a name Pulsar cannot take is an option error, before connecting
    url = endpoints(args).pulsar
    stats = IngestStats()
    client = open_client(url)
    options = dict(streams=args.streams, validate=not args.no_validate, limit=args.limit, stats=stats,
                   progress=_progress)
    try:
        if args.source.split("://", 1)[0].lower() in ("http", "https"):
            _follow(args, client, options)
        else:
            with open_source(args.source) as lines:
                ingest_sse(lines, client, **options)
    except KeyboardInterrupt:
        print(stats.summary(), flush=True)
        print("interrupted: everything read before Ctrl-C was flushed to Pulsar", file=sys.stderr)
        return 130
    except PulsarUnavailable as exc:
        if exc.unreachable:
            raise PulsarUnavailable(
                f"cannot reach Pulsar at {url} ({exc.reason}); start the embedded stack with `timeline up`, "
                "or pass --pulsar URL (or set TIMELINE_PULSAR)", exc.reason, True) from None
        raise PulsarUnavailable(f"Pulsar at {url}: {exc}", exc.reason) from None
    finally:
        client.close()
    print(stats.summary(), flush=True)
    return 0


def _follow(args: argparse.Namespace, client, options: dict) -> None:
    """A live stream: reconnect on drops, resume from (and keep) the last confirmed event id."""
    from timeline.sources.ingest import (
        ResumeState,
        default_state_path,
        follow_stream,
        route_events,
    )

    path = Path(args.state) if args.state else default_state_path(home(args) / "ingest-sse", args.source)
    state = ResumeState(path, args.source)
    start = args.last_event_id or (None if args.no_resume else state.last_event_id)
    if start:
        print(f"ingest-sse: resuming {args.source} after event id {start} (state: {path})", file=sys.stderr,
              flush=True)
    events = follow_stream(args.source, last_event_id=start, since=args.since, max_reconnects=args.max_reconnects,
                           stats=options["stats"])
    try:
        route_events(events, client, checkpoint=state.save, **options)
    finally:
        events.close()


def _progress(stats) -> None:
    """Every few seconds on stderr, so that a long run shows it is alive."""
    print(f"ingest-sse: {stats.read:,} read, {stats.sent:,} sent, {stats.canary:,} canary, "
          f"{stats.dead_lettered:,} dead-lettered ({stats.seconds:.0f} s)", file=sys.stderr, flush=True)
