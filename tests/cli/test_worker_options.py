"""`timeline worker` options, checked before any server is asked."""

import pytest

from timeline.cli.main import main


@pytest.mark.parametrize("value", ["1", "0", "-3", "four"])
def test_too_few_workflow_task_slots_is_a_usage_error(value, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["worker", "--max-concurrent-workflow-tasks", value, "--temporal", "127.0.0.1:1"])
    assert exc.value.code == 2
    assert f"{value!r} is not a whole number of at least 2" in capsys.readouterr().err
