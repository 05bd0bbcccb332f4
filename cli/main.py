"""`timeline`: the umbrella command line."""

from __future__ import annotations

import argparse
import sys

from dsl.errors import TimelineError


def build_parser() -> argparse.ArgumentParser:
    from cli import evaluate

    parser = argparse.ArgumentParser(
        prog="timeline",
        description="Timeline: time-state analytics over event streams. See the README for the DSL.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    evaluate.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except TimelineError as exc:
        print(f"timeline {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"timeline {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
