"""`register-workflow --from`: where a timeline starts reading, checked before anything is registered."""

import pytest

from timeline.cli.main import main
from timeline.dsl.errors import UsageError
from timeline.models import TimelineSpec
from timeline.runtime.registry import build_spec, start_option


def test_start_option_values():
    assert start_option(None) is None and start_option("live") is None  # the default: live
    assert start_option("earliest") == "earliest"
    assert start_option("1738934940000") == 1738934940000
    assert start_option("2025-02-07T13:29:00Z") == 1738934940000
    with pytest.raises(UsageError, match="earliest"):
        start_option("yesterday")


def test_the_spec_keeps_where_it_starts():
    spec, _ = build_spec("late", "has_existed(x == 1)", "t", "k", "ts", start_from="earliest")
    assert spec.start_from == "earliest"
    assert TimelineSpec.model_validate_json(spec.model_dump_json()) == spec
    plain, _ = build_spec("late", "has_existed(x == 1)", "t", "k", "ts")
    assert plain.start_from is None and plain != spec  # registering it again differently is a conflict


def test_a_bad_from_is_a_usage_error_before_any_server_is_asked(capsys):
    code = main(["register", "late", "has_existed(x == 1)", "--topic", "t", "--key", "k", "--time", "ts",
                 "--from", "soon", "--temporal", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and "--from 'soon'" in err and "earliest" in err
