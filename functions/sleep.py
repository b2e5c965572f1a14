"""Sleeps for `seconds` (default 1), then says how long it slept."""

import time


def main(event, context=None):
    seconds = float(event.get("seconds", 1) if isinstance(event, dict) else (event or 1))
    time.sleep(seconds)
    return {"slept": seconds}
