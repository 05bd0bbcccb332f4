"""`timeline eval` and `timeline plan`: the batch evaluator on files."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import BinaryIO

import msgspec
import numpy as np

from timeline.dsl.batch import evaluate_root
from timeline.dsl.compiler import Plan, compile_expression
from timeline.dsl.decode import DecodedEvents
from timeline.dsl.errors import UsageError
from timeline.dsl.events import parse_time, split_key_paths, split_path

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


def read_events(plan: Plan, name: str, key: str, time: str, stdin: BinaryIO | None = None) -> DecodedEvents:
    """The events a plan needs from a file (JSON lines, .gz/.zst JSON lines, Parquet, Arrow IPC,
    by suffix) or from stdin ('-': JSON lines)."""
    from timeline.dsl.columnar import read_events_file

    data = (stdin or sys.stdin.buffer).read() if name == "-" else None
    return read_events_file(name, split_key_paths(key), split_path(time), plan.columns(), data=data)


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
    output_kind = None
    if args.output is not None:
        from timeline.dsl.columnar import output_kind as kind_of

        output_kind = kind_of(args.output)
        if output_kind != "json" and plan.aggregation is not None:
            raise UsageError("an aggregation prints one row per group: leave out --output or give a .json file")
    decoded = read_events(plan, args.events, args.key, args.time)
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
    if output_kind in ("parquet", "arrow"):
        write_span_table(plan, decoded, at, frm, to, args.output)
        return 0
    from timeline.dsl.columnar import answer_json

    out = answer_json(plan, decoded, at, frm, to)
    if args.pretty:
        out = msgspec.json.format(out, indent=2)
    if output_kind == "json":
        try:
            Path(args.output).write_bytes(out + b"\n")
        except OSError as exc:
            raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
        return 0
    sys.stdout.buffer.write(out + b"\n")
    sys.stdout.flush()
    return 0


def write_span_table(plan: Plan, decoded: DecodedEvents, at: int | None, frm: int | None, to: int | None,
                     name: str) -> None:
    """The root timeline as a Parquet/Arrow table: key, node, start, end, value, slope
    (with --at: key, node, time, value)."""
    from timeline.dsl.columnar import spans_table, values_table, write_table
    from timeline.dsl.spans import values_at

    events = decoded.events
    root = evaluate_root(plan, events)
    if at is not None:
        if frm is not None or to is not None:
            raise UsageError("give either --at T or --from/--to, not both")
        n = len(decoded.key_names)
        values = values_at(root, np.arange(n, dtype=np.int64), np.full(n, at, dtype=np.int64), events.frame)
        table = values_table(decoded.key_names, plan.root, at, values)
    else:
        if frm is not None and to is not None and frm >= to:
            raise UsageError(f"--from ({frm}) must be before --to ({to})")
        table = spans_table(root, decoded.key_names, plan.root, frm, to)
    write_table(table, name)


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
        "eval", help="evaluate an expression over an events file (batch)",
        description="Evaluate a timeline expression over events in a file with the batch evaluator and "
                    "print one JSON object: {key: [span, ...]}, or {key: value} with --at; or write the "
                    "spans as a Parquet/Arrow table with --output.",
    )
    p.add_argument("expr", metavar="EXPR", help="the expression, or @FILE to read it from a file")
    p.add_argument("--events", required=True, metavar="FILE", help="events: JSON lines (.jsonl, also .jsonl.gz / .jsonl.zst), Parquet (.parquet) or Arrow "
                        "IPC (.arrow, .feather), by suffix; '-' reads JSON lines from stdin")
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
    p.add_argument("--output", metavar="FILE",
                   help="write the answer to FILE instead of stdout: .parquet or .arrow (.feather) for a table "
                        "with columns key, node, start, end, value, slope (key, node, time, value with --at); "
                        ".json for the JSON answer")
    p.set_defaults(handler=eval_command)

    q = sub.add_parser("plan", help="type-check an expression and print its plan (tree of nodes)",
                       description="Type-check and compile an expression; print the tree of leaf and derived nodes.")
    q.add_argument("expr", metavar="EXPR", help="the expression, or @FILE")
    q.add_argument("--json", action="store_true", help="print the plan as JSON")
    q.set_defaults(handler=plan_command)
