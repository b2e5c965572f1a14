"""The execution state machine: which status changes may be written, and the values it uses."""

from __future__ import annotations

import itertools

import pytest

from spinlet.domain import (
    FINAL_STATUSES,
    ExecutionError,
    ExecutionStatus,
    FunctionStatus,
    JobStatus,
    RuntimeStatus,
    StartKind,
    StatusReason,
    transition,
)
from spinlet.errors import IllegalTransition

S = ExecutionStatus

#: The design's lifecycle, written out pair by pair:
#: `[scheduled ->] queued -> running -> success | failed | error | cancelled`; an execution not
#: started yet may be cancelled or end as an error; a running one whose node died is queued again.
ALLOWED = {
    ("scheduled", "queued"),
    ("scheduled", "cancelled"),
    ("scheduled", "error"),
    ("queued", "running"),
    ("queued", "cancelled"),
    ("queued", "error"),
    ("running", "queued"),
    ("running", "success"),
    ("running", "failed"),
    ("running", "error"),
    ("running", "cancelled"),
}


@pytest.mark.parametrize(
    ("source", "target"), list(itertools.product(ExecutionStatus, ExecutionStatus))
)
def test_every_status_change_is_allowed_exactly_when_the_lifecycle_has_it(
    source: ExecutionStatus, target: ExecutionStatus
) -> None:
    if (source.value, target.value) in ALLOWED:
        change = transition(source, target)
        assert (change.sources, change.target, change.source_values) == (
            (source,),
            target,
            [source.value],
        )
    else:
        with pytest.raises(IllegalTransition, match=f"from {source.value} to {target.value}"):
            transition(source, target)


def test_a_change_from_several_statuses_needs_every_one_of_them_to_allow_it() -> None:
    change = transition((S.SCHEDULED, S.QUEUED), S.CANCELLED)
    assert change.source_values == ["scheduled", "queued"]
    with pytest.raises(IllegalTransition, match="from scheduled to running"):
        transition((S.SCHEDULED, S.QUEUED), S.RUNNING)
    with pytest.raises(IllegalTransition, match="from nothing"):
        transition((), S.CANCELLED)


def test_final_statuses_never_change() -> None:
    assert {s.value for s in FINAL_STATUSES} == {"success", "failed", "error", "cancelled"}
    for status, target in itertools.product(FINAL_STATUSES, ExecutionStatus):
        assert status.is_final
        with pytest.raises(IllegalTransition):
            transition(status, target)
    assert not any(s.is_final for s in (S.SCHEDULED, S.QUEUED, S.RUNNING, S.UNKNOWN))


def test_a_status_another_node_wrote_reads_as_unknown_and_never_changes() -> None:
    assert ExecutionStatus.read("queued") is S.QUEUED
    assert ExecutionStatus.read("paused") is S.UNKNOWN
    assert StatusReason.read("lost") is StatusReason.LOST
    assert StatusReason.read("preempted") == "preempted"
    assert StatusReason.read(None) is None
    assert StartKind.read("stem") is StartKind.STEM
    assert StartKind.read("forked") is None and StartKind.read(None) is None


def test_each_reason_belongs_to_the_status_the_design_gives_it() -> None:
    failed = {"exception", "timeout", "oom", "crashed", "result_too_large"}
    for reason in StatusReason:
        expected = (
            S.FAILED if reason in failed else S.CANCELLED if reason == "cancelled" else S.ERROR
        )
        assert reason.status is expected, reason
    assert StatusReason.LOST.status is S.ERROR  # lost is a reason, never a status
    assert "lost" not in {s.value for s in ExecutionStatus}


def test_an_execution_error_has_one_shape_whoever_builds_it() -> None:
    timeout = ExecutionError.of(StatusReason.TIMEOUT, "execution exceeded its timeout of 1 s")
    assert timeout.as_json() == {
        "type": "Timeout",
        "message": "execution exceeded its timeout of 1 s",
        "traceback": "",
    }
    raised = {"type": "ValueError", "message": "boom", "traceback": "Traceback ..."}
    assert ExecutionError.parse(raised).as_json() == raised
    assert ExecutionError.parse({"message": 42}).as_json() == {
        "type": "Error",
        "message": "42",
        "traceback": "",
    }
    assert ExecutionError.parse("odd").message == "odd"
    assert ExecutionError.parse(None).message == "no error details"


def test_the_states_the_next_issues_build_on_are_fixed() -> None:
    # `unknown`: a status a newer node wrote, read here as such (never written).
    assert [s.value for s in FunctionStatus] == ["building", "available", "error", "unknown"]
    assert [s.value for s in RuntimeStatus] == [
        "creating",
        "available",
        "error",
        "not_built",
        "building",
        "unknown",
    ]
    assert [s.value for s in JobStatus] == ["running", "paused", "done", "cancelled", "unknown"]
    assert [s.value for s in StartKind] == ["warm", "stem", "cold"]


#: A function's lifecycle (and its build's): `building -> available | error`; new requirements
#: or a rebuild go back to `building`, or straight to the end their build already had.
FUNCTION_ALLOWED = {
    ("building", "available"),
    ("building", "error"),
    ("available", "building"),
    ("available", "error"),
    ("error", "building"),
    ("error", "available"),
}


@pytest.mark.parametrize(
    ("source", "target"), list(itertools.product(FunctionStatus, FunctionStatus))
)
def test_a_function_changes_status_exactly_as_its_lifecycle_has_it(
    source: FunctionStatus, target: FunctionStatus
) -> None:
    if (source.value, target.value) in FUNCTION_ALLOWED:
        change = transition(source, target)
        assert (change.sources, change.target) == ((source,), target)
    else:
        with pytest.raises(
            IllegalTransition, match=f"a function cannot go from {source.value} to {target.value}"
        ):
            transition(source, target)
