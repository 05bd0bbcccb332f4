"""`timeline`: the umbrella command line."""

from __future__ import annotations

import argparse
import sys

from timeline.dsl.errors import TimelineError


def build_parser() -> argparse.ArgumentParser:
    from timeline.cli import demo, evaluate, runtime, up

    parser = argparse.ArgumentParser(
        prog="timeline",
        description="Timeline: time-state analytics over event streams. See the README for the DSL.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    evaluate.add_parsers(sub)
    runtime.add_parsers(sub)
    up.add_parsers(sub)
    demo.add_parsers(sub)
    from timeline.cli import api as api_cli
    from timeline.cli import ingest as sources_cli
    from timeline.cli import producer as producer_cli

    api_cli.add_parsers(sub)
    sources_cli.add_parsers(sub)
    produce = sub.add_parser("produce", help="write sample events to Pulsar (also: sample-event-producer)")
    producer_cli.add_producer_options(produce)
    produce.set_defaults(handler=producer_cli.producer_command)
    return parser


def main(argv: list[str] | None = None) -> int:
    return _run(build_parser(), argv)


def _run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    args = parser.parse_args(argv)
    name = getattr(args, "command", None) or parser.prog
    try:
        return args.handler(args)
    except TimelineError as exc:
        print(f"{'timeline ' + name if name != parser.prog else name}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


def _single(prog: str, add, description: str):
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add(parser)
    return parser


def register_workflow_main(argv: list[str] | None = None) -> int:
    """`register-workflow`: the same as `timeline register`."""
    from timeline.cli.runtime import add_register_options

    return _run(_single("register-workflow", add_register_options, "Register a named timeline."), argv)


def sample_event_feeder_main(argv: list[str] | None = None) -> int:
    """`sample-event-feeder`: the same as `timeline feeder`."""
    from timeline.cli.runtime import add_feeder_options

    return _run(_single("sample-event-feeder", add_feeder_options,
                        "Feed a source topic into every timeline registered on it."), argv)


def _exit_now(code: int) -> None:
    """Leave without interpreter finalisation.

    The Temporal client's Rust runtime keeps threads that can race Python's
    shutdown ("Fatal Python error: PyGILState_Release"), and the client has no
    close(). Our commands close what they opened themselves, so once the work
    is done, flush and leave."""
    import logging
    import os

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def console_main() -> None:
    _exit_now(main())


def console_register_workflow() -> None:
    _exit_now(register_workflow_main())


def console_sample_event_producer() -> None:
    from timeline.cli.producer import main as producer_main

    _exit_now(producer_main())


def console_sample_event_feeder() -> None:
    _exit_now(sample_event_feeder_main())


if __name__ == "__main__":
    console_main()
