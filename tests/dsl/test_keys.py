"""The one composite key encoding (issue 9, item 5)."""

from hypothesis import given
from hypothesis import strategies as st

from timeline.dsl.events import event_key, join_key_parts, split_key, split_key_paths

part = st.text(alphabet=st.sampled_from(["a", "b", ":", "\\", "é"]), min_size=1, max_size=6)


@given(a=st.lists(part, min_size=2, max_size=4), b=st.lists(part, min_size=2, max_size=4))
def test_different_parts_give_different_keys(a, b):
    assert split_key(join_key_parts(a)) == a
    if a != b:
        assert join_key_parts(a) != join_key_parts(b)


def test_the_issue_case_and_unchanged_plain_keys():
    paths = split_key_paths("k,w")
    assert event_key({"k": "a:b", "w": "c"}, paths) != event_key({"k": "a", "w": "b:c"}, paths)
    assert event_key({"k": "enwiki", "w": 123}, paths) == "enwiki:123"
    # A single key is never escaped: it prints exactly as the event has it.
    assert event_key({"k": "a:b\\c"}, split_key_paths("k")) == "a:b\\c"
