"""`/v1/openapi.json` describes every route the server has, and nothing else."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

Client = TestClient[Any, Any]


def routes_of(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method in ("HEAD", "OPTIONS", "*") or path is None:
            continue
        found.add((route.method.lower(), path))
    return found


async def test_the_document_and_the_router_agree(process_api: Client) -> None:
    response = await process_api.get("/v1/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document["openapi"].startswith("3.")
    described = {
        (method, path) for path, operations in document["paths"].items() for method in operations
    }
    assert described == routes_of(process_api.server.app)
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == {part[1:-1] for part in path.split("/") if part.startswith("{")}
            assert operation["responses"], (method, path)
    # Every reference points at a schema the document has.
    schemas = document["components"]["schemas"]
    for ref in references(document):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref
    create = document["paths"]["/v1/executions"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert "function_id" in schemas[body.rsplit("/", 1)[1]]["properties"]
    answer = create["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    record = schemas[answer.rsplit("/", 1)[1]]
    # Every field of an execution is always there, but its result in listings.
    assert set(record["properties"]) - set(record["required"]) == {"result"}
    assert {"id", "status", "input", "error", "created_at"} <= set(record["required"])
    assert set(schemas["Error"]["required"]) == {"error", "faultstring"}
    assert "unknown_fields" in schemas["ErrorDetail"]["properties"]
    # The values an execution's fields take are listed; a reason is a string (a newer node may
    # write one this node does not know) whose known values are described.
    start_kind = record["properties"]["start_kind"]["anyOf"][0]["$ref"]
    assert schemas[start_kind.rsplit("/", 1)[1]]["enum"] == ["warm", "stem", "cold"]
    reason = record["properties"]["status_reason"]
    assert {"type": "string"} in reason["anyOf"]
    assert "timeout (failed)" in reason["description"] and "lost" in reason["examples"]


def references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)
