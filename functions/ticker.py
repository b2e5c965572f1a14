"""Prints `tick N of T` every `interval` seconds (default 0.5), `ticks` times (default 3): a
log to watch as it is written (`spinlet invoke ticker --follow`)."""

import time


def main(event, context=None):
    event = event if isinstance(event, dict) else {}
    ticks = int(event.get("ticks", 3))
    interval = float(event.get("interval", 0.5))
    for number in range(1, ticks + 1):
        time.sleep(interval)
        print(f"tick {number} of {ticks}", flush=True)
    return {"ticks": ticks}
