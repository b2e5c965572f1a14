"""A GitHub webhook, for a webhook in `http` mode: checks the `X-Hub-Signature-256` of the
exact body with the secret in its environment, then answers with the event's action."""

import base64
import hashlib
import hmac
import json
import os


def main(event, context=None):
    raw = event["body"]
    body = base64.b64decode(raw) if event["isBase64Encoded"] else raw.encode()
    key = os.environ["WEBHOOK_SECRET"].encode()
    expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, event["headers"].get("x-hub-signature-256", "")):
        return {
            "statusCode": 401,
            "headers": {"Content-Type": "text/plain"},
            "body": "bad signature",
        }
    return {"statusCode": 200, "body": json.dumps({"received": json.loads(body)["action"]})}
