import msgspec
import pytest

from timeline.dsl.batch import run_eval
from timeline.dsl.compiler import compile_expression
from timeline.dsl.decode import decode_jsonl


def run_timeline(expr: str, events: list[dict], *, key="k", time="t", at=None, frm=None, to=None):
    """Evaluate `expr` over events with the batch evaluator, as `timeline eval` does."""
    plan = compile_expression(expr)
    data = b"\n".join(msgspec.json.encode(e) for e in events)
    decoded = decode_jsonl(data, (key,), (time,), plan.columns())
    assert not decoded.bad, decoded.bad
    # Round-trip through JSON: what `timeline eval` prints is what is checked.
    return msgspec.json.decode(msgspec.json.encode(run_eval(plan, decoded, at, frm, to)))


def spans(expr: str, events: list[dict], key="a"):
    """Compact form of one key's timeline: [(start, value)] or [(start, value, slope)]."""
    rows = run_timeline(expr, events)[key]
    return [tuple(v for k, v in r.items() if k != "end") for r in rows]


@pytest.fixture
def timeline_of():
    return spans
