"""A request as a function's HTTP event, and a function's answer as the response."""

from __future__ import annotations

import base64
import json

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from spinlet.api.httpevent import BadAnswer, event_of, response_of


def test_the_event_carries_the_request_and_its_exact_bytes() -> None:
    headers = CIMultiDict(
        [
            ("X-Hub-Signature-256", "sha256=ab"),
            ("Accept", "a"),
            ("Accept", "b"),
            ("Cookie", "console=secret"),
            ("X-Auth-Token", "tok"),
        ]
    )
    request = make_mocked_request("POST", "/v1/webhooks/h/invoke?q=1&q=2&r=x", headers=headers)
    event = event_of(request, b"\xff\xfe", request_id="r1")
    assert (event["body"], event["isBase64Encoded"]) == (
        base64.b64encode(b"\xff\xfe").decode(),
        True,
    )
    assert event["rawPath"] == "/v1/webhooks/h/invoke"
    assert event["rawQueryString"] == "q=1&q=2&r=x"
    assert event["queryStringParameters"] == {"q": "1,2", "r": "x"}
    assert event["headers"] == {"x-hub-signature-256": "sha256=ab", "accept": "a,b"}
    assert event["requestContext"]["http"]["method"] == "POST"
    assert event["requestContext"]["requestId"] == "r1"
    text = event_of(request, "héllo".encode(), request_id="r2")
    assert (text["body"], text["isBase64Encoded"]) == ("héllo", False)


def test_a_shaped_answer_is_the_response_without_cookies_and_with_the_safety_headers() -> None:
    response = response_of(
        {
            "statusCode": 418,
            "headers": {
                "X-One": "1",
                "X-Number": 2,
                "Set-Cookie": "a=b",
                "Transfer-Encoding": "chunked",
                "Content-Length": "999",
                "X-Content-Type-Options": "sniff",
            },
            "body": base64.b64encode(b"\x00\x01").decode(),
            "isBase64Encoded": True,
        },
        {"X-Spinlet-Execution-Id": "e"},
    )
    assert response.status == 418 and response.body == b"\x00\x01"
    assert response.headers["X-One"] == "1" and response.headers["X-Number"] == "2"
    for dropped in ("Set-Cookie", "Transfer-Encoding", "Content-Length"):
        assert dropped not in response.headers
    assert response.headers["Content-Security-Policy"] == "sandbox"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Spinlet-Execution-Id"] == "e"


def test_a_plain_answer_is_json() -> None:
    response = response_of([1, {"statusCode": 500}], {})
    assert response.status == 200 and json.loads(response.body) == [1, {"statusCode": 500}]
    assert response.headers["Content-Type"] == "application/json"
    shaped = response_of({"statusCode": 200, "body": {"a": 1}}, {})
    assert json.loads(shaped.body) == {"a": 1}


@pytest.mark.parametrize(
    "answer",
    [
        {"statusCode": "200"},
        {"statusCode": 99},
        {"statusCode": True},
        {"statusCode": 200, "headers": ["X-A"]},
        {"statusCode": 200, "headers": {"X-A": "1\r\nSet-Cookie: a=b"}},
        {"statusCode": 200, "headers": {"Bad Name": "1"}},
        {"statusCode": 200, "body": "***", "isBase64Encoded": True},
    ],
)
def test_an_answer_that_is_no_response_is_refused(answer: dict[str, object]) -> None:
    with pytest.raises(BadAnswer):
        response_of(answer, {})
