"""`timeline eval` and `timeline plan`: the batch evaluator on files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import BinaryIO

import msgspec

from timeline.dsl.batch import load_events, run_eval
from timeline.dsl.compiler import Plan, compile_expression
from timeline.dsl.decode import DecodedEvents
from timeline.dsl.errors import UsageError
from timeline.dsl.events import parse_time

MAX_BAD_LINES_SHOWN = 5


def read_expression(text: str) -> str:
    """EXPR on the command line, or @FILE to read it from a file."""
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            return path.read_text()
        except OSError as exc:
            raise UsageError(f"cannot read the expression file {path}: {exc.strerror}") from None
    return text


def read_input(name: str, stdin: BinaryIO | None = None) -> bytes:
    if name == "-":
        return (stdin or sys.stdin.buffer).read()
    path = Path(name)
    if path.suffix == ".parquet":
        raise UsageError(f"{path}: parquet input is not supported yet; convert it to JSON lines")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"events file not found: {path}") from None
    except OSError as exc:
        raise UsageError(f"cannot read events file {path}: {exc.strerror}") from None


def parse_time_option(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value, option)
    except Exception:
        raise UsageError(f"{option} {value!r} is not a time: give epoch milliseconds or ISO-8601 "
                         "(2025-02-07T13:29:00Z)") from None


def eval_command(args: argparse.Namespace) -> int:
    plan = compile_expression(read_expression(args.expr))
    at = parse_time_option(args.at, "--at")
    frm = parse_time_option(args.frm, "--from")
    to = parse_time_option(args.to, "--to")
    data = read_input(args.events)
    decoded = load_events(plan, data, args.key, args.time)
    if decoded.bad:
        if args.dead_letter is None:
            for bad in decoded.bad[:MAX_BAD_LINES_SHOWN]:
                print(f"timeline eval: {args.events}:{bad.line}: {bad.reason}", file=sys.stderr)
            more = len(decoded.bad) - MAX_BAD_LINES_SHOWN
            if more > 0:
                print(f"timeline eval: ... and {more} more bad lines", file=sys.stderr)
            print(f"timeline eval: {len(decoded.bad)} bad line(s), nothing evaluated; fix them or pass "
                  "--dead-letter FILE to set them aside and go on", file=sys.stderr)
            return 1
        write_dead_letters(args.dead_letter, decoded)
        print(f"timeline eval: {len(decoded.bad)} bad line(s) written to {args.dead_letter}", file=sys.stderr)
    answer = run_eval(plan, decoded, at, frm, to)
    out = msgspec.json.encode(answer)
    if args.pretty:
        out = msgspec.json.format(out, indent=2)
    sys.stdout.buffer.write(out + b"\n")
    sys.stdout.flush()
    return 0


def write_dead_letters(path: str, decoded: DecodedEvents) -> None:
    encoder = msgspec.json.Encoder()
    try:
        with open(path, "wb") as f:
            for bad in decoded.bad:
                record = {"line": bad.line, "reason": bad.reason, "raw": bad.raw.decode("utf-8", "replace")}
                f.write(encoder.encode(record) + b"\n")
    except OSError as exc:
        raise UsageError(f"cannot write the dead-letter file {path}: {exc.strerror}") from None


def plan_command(args: argparse.Namespace) -> int:
    plan = compile_expression(read_expression(args.expr))
    if args.json:
        sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(plan.describe()), indent=2) + b"\n")
        return 0
    print(render_tree(plan))
    return 0


def render_tree(plan: Plan) -> str:
    """The plan as an indented tree: id, leaf/derived, kind, label."""
    lines = [f"{'  ' * depth}{node.id}  [{'leaf' if node.is_leaf else 'derived'}, {node.kind.value}]  "
             f"{node.label}{' (shared, shown above)' if again else ''}" for node, depth, again in plan.walk()]
    if plan.aggregation is not None:
        lines.append(f"then {plan.aggregation.text()}")
    return "\n".join(lines)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval", help="evaluate an expression over a JSON-lines file (batch)",
        description="Evaluate a timeline expression over events in a JSON-lines file with the batch "
                    "evaluator and print one JSON object: {key: [span, ...]}, or {key: value} with --at.",
    )
    p.add_argument("expr", metavar="EXPR", help="the expression, or @FILE to read it from a file")
    p.add_argument("--events", required=True, metavar="FILE", help="JSON lines, one event per line ('-' for stdin)")
    p.add_argument("--key", required=True, metavar="PATH",
                   help="dotted path of the key (session_id, page.page_id); paths joined by commas make a "
                        "composite key (wiki_id,page.page_id -> enwiki:123)")
    p.add_argument("--time", required=True, metavar="PATH",
                   help="dotted path of the event time: epoch ms or ISO-8601 (ts, meta.dt)")
    p.add_argument("--at", metavar="T", help="print each key's value at time T (epoch ms or ISO-8601)")
    p.add_argument("--from", dest="frm", metavar="T", help="clip timelines to start at T")
    p.add_argument("--to", metavar="T", help="clip timelines to end at T (exclusive)")
    p.add_argument("--dead-letter", metavar="FILE", help="write bad lines here (JSON lines) and go on")
    p.add_argument("--pretty", action="store_true", help="indent the JSON output")
    p.set_defaults(handler=eval_command)

    q = sub.add_parser("plan", help="type-check an expression and print its plan (tree of nodes)",
                       description="Type-check and compile an expression; print the tree of leaf and derived nodes.")
    q.add_argument("expr", metavar="EXPR", help="the expression, or @FILE")
    q.add_argument("--json", action="store_true", help="print the plan as JSON")
    q.set_defaults(handler=plan_command)
