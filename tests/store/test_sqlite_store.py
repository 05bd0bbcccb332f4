"""The SQLite results store: patches, idempotency, a root re-run after a worker crash."""

from timeline.dsl.incremental import KeyTimeline, SpanPatch
from timeline.models import ResultsBatch, TimelineSpec
from timeline.store.sqlite import SqliteStore


T = TimelineSpec(name="t", expression="has_existed(x == 1)", source_topic="s", key_path="k", time_path="ts")


def _batch(seq, patches, generation=""):
    return ResultsBatch(timeline="t", shard=0, seq=seq, patches=patches, results_topic="r", generation=generation)


def _store(tmp_path, spec=T):
    """A store with timeline t registered: batches of unregistered timelines are skipped."""
    store = SqliteStore(tmp_path / "r.db")
    store.register(spec)
    return store


def test_same_seq_again_with_more_changes_is_applied(tmp_path):
    """A root whose workflow task re-ran after a crash sends its seq again, with what
    arrived meanwhile merged in: nothing of it may be skipped."""
    store = _store(tmp_path)
    first = SpanPatch(key="k", since=0, starts=[0], values=[1])
    more = SpanPatch(key="k", since=10, starts=[10], values=[2])
    store.apply_results(_batch(10, [first]))
    store.apply_results(_batch(10, [first, more]))   # the re-run: a superset
    assert store.result("t", "k").timeline == KeyTimeline(starts=[0, 10], values=[1, 2])
    store.apply_results(_batch(10, [first, more]))   # and once more: idempotent
    assert store.result("t", "k").timeline == KeyTimeline(starts=[0, 10], values=[1, 2])


def test_an_older_batch_is_skipped(tmp_path):
    store = _store(tmp_path)
    store.apply_results(_batch(5, [SpanPatch(key="k", since=0, starts=[0], values=[1])]))
    store.apply_results(_batch(6, [SpanPatch(key="k", since=10, starts=[10], values=[2])]))
    store.apply_results(_batch(5, [SpanPatch(key="k", since=0, starts=[0], values=[9])]))  # late retry
    assert store.result("t", "k").timeline == KeyTimeline(starts=[0, 10], values=[1, 2])


def test_registrations(tmp_path):
    store = SqliteStore(tmp_path / "r.db")
    spec = TimelineSpec(name="a", expression="has_existed(x == 1)", source_topic="t", key_path="k", time_path="ts")
    assert store.register(spec) is True and store.register(spec) is False
    assert store.list() == [spec] and store.get("a") == spec


def test_a_name_registered_again_starts_clean(tmp_path):
    """A removed registration's workflows may still publish: nothing of theirs is stored,
    and the new registration's seq numbers start from nothing."""
    store = _store(tmp_path, T.model_copy(update={"generation": "old"}))
    assert store.apply_results(_batch(50, [SpanPatch(key="k", since=0, starts=[0], values=[1])], "old")) == []  # applied, nothing refused
    store.remove("t")
    assert store.apply_results(_batch(51, [SpanPatch(key="k", since=0, starts=[0], values=[7])], "old")) is None  # another generation's: skipped
    assert store.keys("t") == []
    new = T.model_copy(update={"expression": "has_existed(x == 2)", "generation": "new"})
    assert store.register(new) is True
    assert store.is_current("t", "new") and not store.is_current("t", "old")
    assert store.apply_results(_batch(52, [SpanPatch(key="old", since=0, starts=[0], values=[1])], "old")) is None  # another generation's: skipped
    assert store.apply_results(_batch(1, [SpanPatch(key="k", since=0, starts=[0], values=[2])], "new")) == []  # applied, nothing refused
    assert store.keys("t") == ["k"] and store.result("t", "k").timeline == KeyTimeline(starts=[0], values=[2])


def test_the_same_definition_keeps_its_generation(tmp_path):
    store = _store(tmp_path, T.model_copy(update={"generation": "g1"}))
    assert store.register(T.model_copy(update={"generation": "g2"})) is False
    assert store.get("t").generation == "g1"
