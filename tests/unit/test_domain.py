from spinlet.domain import FINAL_STATUSES, TRANSITIONS, ExecutionStatus


def test_final_statuses_never_change() -> None:
    for status in FINAL_STATUSES:
        assert TRANSITIONS[status] == frozenset()
        assert status.is_final


def test_an_execution_runs_before_it_succeeds() -> None:
    assert ExecutionStatus.QUEUED.can_become(ExecutionStatus.RUNNING)
    assert ExecutionStatus.RUNNING.can_become(ExecutionStatus.SUCCESS)
    assert not ExecutionStatus.QUEUED.can_become(ExecutionStatus.SUCCESS)
    assert not ExecutionStatus.SUCCESS.can_become(ExecutionStatus.RUNNING)
