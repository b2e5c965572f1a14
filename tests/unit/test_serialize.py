"""The JSON of each record, field by field: what Qinling clients and scripts read."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from spinlet.api.executions import WITHOUT_RESULTS
from spinlet.api.serialize import (
    AliasRecord,
    ExecutionPage,
    ExecutionRecord,
    FunctionRecord,
    NewToken,
    VersionRecord,
    respond,
)
from spinlet.domain import (
    Alias,
    ApiToken,
    Execution,
    ExecutionStatus,
    Function,
    FunctionVersion,
    Package,
    Role,
    Routing,
)

CREATED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
FINISHED = datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC)
PACKAGE = Package(sha256="ab" * 32, md5sum="cd" * 16, size=321)

EXECUTION = Execution(
    id="e1",
    function_id="f1",
    function_name="hello",
    function_version=2,
    function_alias="live",
    status=ExecutionStatus.FAILED,
    status_reason="exception",
    sync=False,
    input={"name": "ü", "n": [1, 2.5, None]},
    result=None,
    error={"type": "ValueError", "message": "no", "traceback": "..."},
    duration_ms=1.25,
    start_kind="warm",
    image_id="sha256:1",
    container_id="c0ffee",
    description="nightly",
    node_id="node-a",
    attempts=1,
    request_hash="secret-hash",
    cancel_requested="kill",
    created_at=CREATED,
    started_at=CREATED,
    finished_at=FINISHED,
    updated_at=FINISHED,
)


def answered(record: BaseModel, exclude: Any = None) -> Any:
    response = respond(record, exclude=exclude)
    assert response.content_type == "application/json"
    assert response.text is not None
    return json.loads(response.text)


def test_an_execution_reads_as_it_always_did() -> None:
    assert answered(ExecutionRecord.model_validate(EXECUTION)) == {
        "id": "e1",
        "function_id": "f1",
        "function_name": "hello",
        "function_version": 2,
        "function_alias": "live",
        "status": "failed",
        "status_reason": "exception",
        "sync": False,
        "input": {"name": "ü", "n": [1, 2.5, None]},
        "result": None,
        "error": {"type": "ValueError", "message": "no", "traceback": "..."},
        "duration_ms": 1.25,
        "start_kind": "warm",
        "init_ms": None,
        "image_id": "sha256:1",
        "container_id": "c0ffee",
        "source": "api",
        "webhook_id": None,
        "description": "nightly",
        "expired": False,
        "attempts": 1,
        "node_id": "node-a",
        "job_id": None,
        "schedule": None,
        "project_id": "default",
        # As `datetime.isoformat()` writes them: `+00:00`, not `Z`.
        "created_at": "2026-01-02T03:04:05.678000+00:00",
        "started_at": "2026-01-02T03:04:05.678000+00:00",
        "finished_at": "2026-01-02T03:04:06+00:00",
        "updated_at": "2026-01-02T03:04:06+00:00",
    }


def test_an_error_always_has_its_three_fields() -> None:
    lost = EXECUTION.evolve(
        status=ExecutionStatus.ERROR,
        status_reason="lost",
        error={"type": "Lost", "message": "the node running it stopped"},
    )
    assert answered(ExecutionRecord.model_validate(lost))["error"] == {
        "type": "Lost",
        "message": "the node running it stopped",
        "traceback": "",
    }


def test_a_listing_leaves_results_out_unless_asked() -> None:
    done = EXECUTION.evolve(status=ExecutionStatus.SUCCESS, result={"ok": True})
    page = ExecutionPage(executions=[done], next="http://node/v1/executions?marker=e1")
    assert answered(page)["executions"][0]["result"] == {"ok": True}
    listed = answered(page, exclude=WITHOUT_RESULTS)
    assert "result" not in listed["executions"][0]
    assert listed["executions"][0]["status"] == "success"
    assert listed["next"] == "http://node/v1/executions?marker=e1"


def test_a_function_shows_its_environment_keys_never_their_values() -> None:
    function = Function(
        id="f1",
        name="hello",
        runtime_id="r1",
        package=PACKAGE,
        environment={"TOKEN": "s3cret", "A": "1"},
        latest_version=3,
        created_at=CREATED,
    )
    body = answered(FunctionRecord.model_validate(function))
    assert "s3cret" not in json.dumps(body)
    assert body == {
        "id": "f1",
        "name": "hello",
        "description": None,
        "runtime_id": "r1",
        "code": {"source": "package", "md5sum": "cd" * 16},
        "entry": "main.main",
        "count": 0,
        "cpu": 1000,
        "retries": 0,
        "concurrency": 10,
        "environment_keys": ["A", "TOKEN"],
        "network": False,
        "memory_size": 128 * 1024 * 1024,
        "timeout": 60.0,
        "status": "available",
        "status_message": None,
        "requirements": None,
        "dependencies": [],
        "package_size": 321,
        "latest_version": 3,
        "project_id": "default",
        "created_at": "2026-01-02T03:04:05.678000+00:00",
        "updated_at": None,
    }


def test_a_version_is_numbered_as_qinling_names_it() -> None:
    version = FunctionVersion(
        id="v1",
        function_id="f1",
        number=4,
        package=PACKAGE,
        entry="main.main",
        runtime_id="r1",
        image_id="sha256:1",
        timeout=5.0,
        memory_size=64,
        cpu=500,
        config_hash="h",
        environment={"B": "2"},
        created_at=CREATED,
    )
    body = answered(VersionRecord.model_validate(version))
    assert body["version_number"] == 4
    assert "number" not in body
    assert (body["count"], body["package_size"], body["environment_keys"]) == (0, 321, ["B"])


def test_an_alias_shows_its_canary() -> None:
    alias = Alias(
        id="a1", name="live", function_id="f1", function_version=1, routing=Routing(2, 0.1)
    )
    assert answered(AliasRecord.model_validate(alias))["routing"] == {"version": 2, "weight": 0.1}
    plain = alias.evolve(routing=None)
    assert answered(AliasRecord.model_validate(plain))["routing"] is None


def test_a_new_token_holds_its_secret_once() -> None:
    token = ApiToken(id="t1", project_id="p", role=Role.MEMBER, prefix="spl_ab", created_at=CREATED)
    body = answered(NewToken.model_validate({**vars(token), "token": "spl_ab.secret"}))
    assert body == {
        "id": "t1",
        "project_id": "p",
        "role": "member",
        "name": None,
        "prefix": "spl_ab",
        "created_at": "2026-01-02T03:04:05.678000+00:00",
        "revoked_at": None,
        "token": "spl_ab.secret",
    }
