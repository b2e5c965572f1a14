"""Always raises: shows how a failed execution looks."""


def main(event, context=None):
    print("about to fail")
    message = event.get("message", "something went wrong") if isinstance(event, dict) else event
    raise ValueError(message or "something went wrong")
