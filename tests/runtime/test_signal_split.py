"""A node's patch signals within the signal budget: however large a box (many keys, or one key
whose patch alone passes the budget), the signals a parent receives, applied in order, give
what the whole box gives, each within the budget, with consecutive seqs and the watermarks and
closed keys after every patch."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from timeline.dsl.incremental import KeyTimeline, SpanPatch
from timeline.dsl.limits import MAX_SIGNAL_BYTES
from timeline.models import PatchSignal, TimelineSpec, signal_budget, split_patch_signal


def _patch(key: str, since: int, n: int, numeric: bool = False, step: int = 300) -> SpanPatch:
    starts = [since + i * step for i in range(n)]
    if numeric:
        return SpanPatch(key=key, since=since, starts=starts, values=[i * 1.5 for i in range(n)],
                         slopes=[float(i % 2) for i in range(n)])
    return SpanPatch(key=key, since=since, starts=starts, values=[("play", "buffer", "seek")[i % 3] for i in range(n)])


def _apply(signals: list[PatchSignal], start: dict[str, KeyTimeline]) -> dict[str, KeyTimeline]:
    out = dict(start)
    for s in signals:
        for p in s.patches:
            out[p.key] = out.get(p.key, KeyTimeline()).with_patch(p)
    return out


def _size(signal: PatchSignal) -> int:
    return len(signal.model_dump_json().encode())


def _check(whole: PatchSignal, budget: int, start: dict[str, KeyTimeline] | None = None) -> list[PatchSignal]:
    parts = split_patch_signal(whole, budget)
    assert all(_size(p) <= budget for p in parts), [_size(p) for p in parts]
    assert [p.seq for p in parts] == list(range(whole.seq, whole.seq + len(parts)))
    assert _apply(parts, start or {}) == _apply([whole], start or {})
    # Watermarks and closed keys only once every patch is in.
    last_patch = max((i for i, p in enumerate(parts) if p.patches), default=-1)
    assert all(not (p.watermarks or p.closed) for p in parts[:last_patch])
    assert {k: v for p in parts for k, v in p.watermarks.items()} == whole.watermarks
    assert [k for p in parts for k in p.closed] == whole.closed
    return parts


def test_a_signal_within_the_budget_is_sent_whole():
    whole = PatchSignal(child="c", seq=7, patches=[_patch("a", 0, 10)], watermarks={"a": 2700})
    assert split_patch_signal(whole, 64 * 1024) == [whole]


def test_one_key_of_twenty_thousand_events_is_cut_under_a_256_kb_server():
    """The small-payload-limit test's long key, when a lagging leaf applies all of it in one
    step: one patch of ~16,000 spans (~460 KB) failed the workflow task on every retry."""
    spec = TimelineSpec(name="x", expression="TL_HasExisted(col(\"a\") == 1)",
                        sources=[{"topic": "t", "key_path": "k", "time_path": "ts"}], max_state_bytes=150_000)
    budget = signal_budget(spec)
    assert budget == 150_000
    whole = PatchSignal(child="c", seq=3, patches=[_patch("long", 1_700_000_000_000, 20_000)],
                        watermarks={"long": 1_700_006_000_000})
    assert _size(whole) > 256 * 1024
    parts = _check(whole, budget)
    assert len(parts) >= 3


def test_the_default_budget_is_the_signal_limit():
    spec = TimelineSpec(name="x", expression="TL_HasExisted(col(\"a\") == 1)",
                        sources=[{"topic": "t", "key_path": "k", "time_path": "ts"}])
    assert signal_budget(spec) == MAX_SIGNAL_BYTES


def test_many_keys_and_watermarks_pass_the_budget():
    patches = [_patch(f"key-{i:05d}", 1000 * i, 20, numeric=i % 2 == 0) for i in range(3000)]
    watermarks = {f"key-{i:05d}": 10 ** 12 + i for i in range(3000)}
    whole = PatchSignal(child="c", seq=1, patches=patches, watermarks=watermarks,
                        closed=[f"gone-{i}" for i in range(2000)])
    assert len(_check(whole, 40_000)) > 5


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 50_000), st.integers(0, 400), st.booleans()),
                min_size=1, max_size=12),
       st.integers(2_000, 20_000))
def test_any_box_applied_in_parts_gives_what_the_whole_gives(spec_patches, budget):
    patches = [_patch(k, since, n, numeric) for k, since, n, numeric in spec_patches]
    # The receiver's timelines before: something on every key, numeric or not as its patches are.
    kinds = {p.key: p.slopes is not None for p in patches}
    start = {k: (KeyTimeline(starts=[0, 100], values=[0, 1.0], slopes=[0.0, 1.0]) if numeric
                 else KeyTimeline(starts=[0, 100], values=["seek", "play"])) for k, numeric in kinds.items()}
    # A key's patches must agree on numeric or not (they do in a node): keep the first kind.
    patches = [p for p in patches if (p.slopes is not None) == kinds[p.key]]
    whole = PatchSignal(child="c", seq=5, patches=patches, watermarks={k: 99 for k in kinds}, closed=["z"])
    _check(whole, budget, start)
