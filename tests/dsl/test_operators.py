"""Each operator on small, hand-checked timelines (times in ms)."""

from conftest import run_timeline, spans

CIR = ('TL_DurationWhere(TL_HasExisted(col("playerStateChange") == "play") '
       '&& !TL_HasExistedWithin(col("playerStateChange") == "seek", 5s) '
       '&& TL_LatestEventToState(col("playerStateChange")) == "buffer")')


def ev(t, key="a", **fields):
    return {"k": key, "t": t, **fields}


class TestLatestEventToState:
    def test_latest_value_and_merging(self):
        events = [ev(1, x="p"), ev(3), ev(5, x="q"), ev(7, x="q"), ev(9, x="p")]
        assert spans("latest_event_to_state(x)", events) == [(1, "p"), (5, "q"), (9, "p")]

    def test_unknown_from_the_first_event_until_the_field_appears(self):
        assert spans("latest_event_to_state(x)", [ev(0, y=1), ev(4, x="p")]) == [(0, None), (4, "p")]

    def test_equal_times_later_arrival_wins(self):
        assert spans("latest_event_to_state(x)", [ev(5, x="late"), ev(5, x="later"), ev(2, x="first")]) == [
            (2, "first"), (5, "later")]

    def test_null_is_not_a_value(self):
        assert spans("latest_event_to_state(x)", [ev(1, x="p"), ev(2, x=None)]) == [(1, "p")]

    def test_nested_path_and_iso_times(self):
        events = [{"k": "a", "t": "2025-02-07T13:29:00Z", "page": {"ns": 0}},
                  {"k": "a", "t": "2025-02-07T13:29:01.500Z", "page": {"ns": 1}}]
        assert spans('latest_event_to_state(page.ns)', events) == [(1738934940000, 0), (1738934941500, 1)]

    def test_where_keeps_only_the_matching_events(self):
        # the latest rev of an edit, whatever the predictions in between carry
        events = [ev(1, s="edit", rev=101), ev(2, s="edit", rev=102), ev(3, s="pred", rev=101)]
        assert spans('latest_event_to_state(rev, s == "edit")', events) == [(1, 101), (2, 102)]
        assert spans('TL_LatestEventToState(col("rev"), col("s") == "pred")', events) == [(1, None), (3, 101)]
        assert spans("latest_event_to_state(rev)", events) == [(1, 101), (2, 102), (3, 101)]

    def test_where_must_be_an_event_predicate(self):
        import pytest

        from timeline.dsl.compiler import compile_expression
        from timeline.dsl.errors import DslTypeError

        with pytest.raises(DslTypeError, match="takes an event predicate, got a boolean timeline"):
            compile_expression('latest_event_to_state(rev, has_existed(s == "edit"))')


class TestHasExisted:
    def test_false_from_first_event_true_from_first_match(self):
        assert spans('has_existed(x == "p")', [ev(0, x="q"), ev(4, x="p"), ev(6, x="q")]) == [(0, False), (4, True)]

    def test_never(self):
        assert spans('TL_HasExisted(col("x") == "p")', [ev(0, x="q")]) == [(0, False)]

    def test_missing_field_makes_the_predicate_false(self):
        assert spans('has_existed(x != "p")', [ev(0), ev(3, x="q")]) == [(0, False), (3, True)]
        assert spans('has_existed(!(x == "p"))', [ev(0)]) == [(0, False)]


class TestHasExistedWithin:
    def test_window_after_each_match(self):
        events = [ev(0), ev(10, x=1), ev(20, x=1)]
        assert spans("has_existed_within(x == 1, 5ms)", events) == [
            (0, False), (10, True), (15, False), (20, True), (25, False)]

    def test_a_later_match_extends_an_open_window(self):
        assert spans("has_existed_within(x == 1, 5ms)", [ev(10, x=1), ev(13, x=1)]) == [(10, True), (18, False)]

    def test_touching_windows_merge(self):
        assert spans("has_existed_within(x == 1, 5ms)", [ev(10, x=1), ev(15, x=1)]) == [(10, True), (20, False)]

    def test_bare_number_is_seconds(self):
        assert spans("has_existed_within(x == 1, 2)", [ev(0, x=1)]) == [(0, True), (2000, False)]


class TestDurationWhere:
    def test_spec_worked_example(self):
        events = [{"k": "a", "t": 1000, "playerStateChange": "play"},
                  {"k": "a", "t": 2000, "playerStateChange": "seek"},
                  {"k": "a", "t": 5000, "playerStateChange": "buffer"},
                  {"k": "a", "t": 9000, "playerStateChange": "play"}]
        assert spans(CIR, events) == [(1000, 0, 0), (7000, 0, 1), (9000, 2000, 0)]
        assert run_timeline(CIR, events, at=12000) == {"a": 2000}
        assert run_timeline(CIR, events, at=8000) == {"a": 1000}
        assert run_timeline(CIR, events, at=500) == {"a": None}

    def test_counts_from_the_first_event_while_the_input_is_unknown(self):
        events = [ev(0), ev(10, x="b"), ev(15, x="c")]
        assert spans('duration_where(latest_event_to_state(x) == "b")', events) == [(0, 0, 0), (10, 0, 1), (15, 5, 0)]


class TestDurationInCurState:
    def test_resets_at_every_change(self):
        assert spans("duration_in_cur_state(latest_event_to_state(x))", [ev(0, x="a"), ev(10, x="b"), ev(12, x="b")]) \
            == [(0, 0, 1), (10, 0, 1)]

    def test_unknown_where_the_input_is_unknown(self):
        assert spans("TL_DurationInCurState(TL_LatestEventToState(col(\"x\")))", [ev(0), ev(5, x="a")]) == [
            (0, None, None), (5, 0, 1)]


class TestComparisons:
    def test_exact_crossings_on_a_numeric_timeline(self):
        events = [ev(0, x="a"), ev(10, x="b")]
        tl = "duration_in_cur_state(latest_event_to_state(x))"
        assert spans(f"{tl} > 3ms", events) == [(0, False), (4, True), (10, False), (14, True)]
        assert spans(f"{tl} >= 3ms", events) == [(0, False), (3, True), (10, False), (13, True)]
        assert spans(f"{tl} < 3ms", events) == [(0, True), (3, False), (10, True), (13, False)]
        assert spans(f"{tl} == 3ms", events) == [(0, False), (3, True), (4, False), (13, True), (14, False)]

    def test_a_bare_number_against_a_duration_means_seconds(self):
        tl = "duration_in_cur_state(latest_event_to_state(x))"
        assert spans(f"{tl} < 600", [ev(0, x="a")]) == spans(f"{tl} < 10m", [ev(0, x="a")]) == [
            (0, True), (600_000, False)]

    def test_constant_on_the_left_is_flipped(self):
        events = [ev(0, n=1), ev(5, n=3)]
        assert spans("2 < latest_event_to_state(n)", events) == spans("latest_event_to_state(n) > 2", events) == [
            (0, False), (5, True)]

    def test_values_compare_by_kind(self):
        events = [ev(0, n=1), ev(1, n=1.0), ev(2, n=True), ev(3, n="1"), ev(4, n=1)]
        assert spans("latest_event_to_state(n) == 1", events) == [(0, True), (2, False), (4, True)]

    def test_ordering_a_string_value_is_unknown(self):
        assert spans("latest_event_to_state(n) > 2", [ev(0, n="abc"), ev(3, n=5)]) == [(0, None), (3, True)]

    def test_function_spellings(self):
        events = [ev(0, n=1), ev(5, n=3)]
        assert spans("GreaterThan(TL_LatestEventToState(col(\"n\")), 2)", events) == [(0, False), (5, True)]
        assert spans("EqualTo(latest_event_to_state(n), 3)", events) == [(0, False), (5, True)]


class TestKleeneLogic:
    def test_false_and_unknown_is_false_true_or_unknown_is_true(self):
        events = [ev(0, y=1), ev(5, x="a")]
        unknown_until_5 = 'latest_event_to_state(x) == "a"'
        assert spans(f"{unknown_until_5} && has_existed(y == 2)", events) == [(0, False)]
        assert spans(f"{unknown_until_5} && has_existed(y == 1)", events) == [(0, None), (5, True)]
        assert spans(f"{unknown_until_5} || has_existed(y == 1)", events) == [(0, True)]
        assert spans(f"{unknown_until_5} || has_existed(y == 2)", events) == [(0, None), (5, True)]
        assert spans(f"!({unknown_until_5})", events) == [(0, None), (5, False)]
        assert spans(f"And({unknown_until_5}, Not(has_existed(y == 2)))", events) == [(0, None), (5, True)]


class TestKeys:
    def test_keys_are_independent(self):
        events = [ev(0, "a", x=1), ev(3, "b", x=2), ev(5, "a", x=2)]
        out = run_timeline("latest_event_to_state(x)", events)
        assert out == {
            "a": [{"start": 0, "end": 5, "value": 1}, {"start": 5, "end": None, "value": 2}],
            "b": [{"start": 3, "end": None, "value": 2}],
        }

    def test_from_to_clips(self):
        events = [ev(0, x="a"), ev(10, x="b")]
        out = run_timeline("duration_in_cur_state(latest_event_to_state(x))", events, frm=5, to=12)
        assert out == {"a": [{"start": 5, "end": 10, "value": 5, "slope": 1},
                             {"start": 10, "end": 12, "value": 0, "slope": 1}]}


class TestAggregation:
    def test_per_group_of_the_latest_group_value(self):
        events = [ev(0, "a", cdn="x", n=1), ev(0, "b", cdn="x", n=4), ev(0, "c", cdn="y", n=10),
                  ev(5, "a", cdn="y")]
        expr = "latest_event_to_state(n) | aggregate(group_by(cdn), count, sum, avg, min, max)"
        assert run_timeline(expr, events, at=3) == {
            "x": {"count": 2, "sum": 5, "avg": 2.5, "min": 1, "max": 4},
            "y": {"count": 1, "sum": 10, "avg": 10, "min": 10, "max": 10},
        }
        assert run_timeline(expr, events, at=5)["y"] == {"count": 2, "sum": 11, "avg": 5.5, "min": 1, "max": 10}
