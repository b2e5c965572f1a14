"""Cron patterns and time zones of jobs: parsed and stepped by croniter, never by hand.

A pattern has 5 fields (minute hour day month weekday) or 6, the sixth being seconds (croniter's
order: `* * * * * */10` is every ten seconds). Ticks are computed in the job's time zone (so
`0 2 * * *` is 2 am there, daylight saving time included) and stored in UTC.
"""

from __future__ import annotations

import asyncio
import functools
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from spinlet.errors import ValidationFailed

FIELDS = (5, 6)
#: The most missed ticks a catch-up counts (a per-second job down for a day has 86,400).
MAX_COUNTED = 1000


def check_pattern(pattern: str) -> str:
    """The pattern, stripped; `ValidationFailed` unless croniter reads it (5 or 6 fields)."""
    pattern = " ".join(pattern.split())
    if len(pattern.split(" ")) not in FIELDS or not croniter.is_valid(pattern):
        raise ValidationFailed(
            f"pattern {pattern!r} is not a cron pattern: 5 fields (minute hour day month "
            "weekday), or 6 with seconds last (`* * * * * */10`)"
        )
    return pattern


async def load(name: str) -> ZoneInfo:
    """`zone(name)`, read off the event loop: the first use of a zone reads its file."""
    return await asyncio.to_thread(zone, name)


@functools.cache
def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` (`Europe/Paris`, `UTC`); `ValidationFailed` for another.
    Kept once read (async code calls `load` first)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(f"timezone {name!r} is not an IANA time zone name") from None


def next_tick(pattern: str, timezone: str, after: datetime) -> datetime:
    """The pattern's first tick strictly after `after`, in UTC (`load` the zone first)."""
    try:
        ticks = croniter(pattern, after.astimezone(zone(timezone)))
        tick: datetime = ticks.get_next(datetime)
    except CroniterError as exc:  # a pattern no date matches (`0 0 31 2 *`)
        raise ValidationFailed(f"pattern {pattern!r} has no next tick: {exc}") from None
    return tick.astimezone(UTC)


def catch_up(pattern: str, timezone: str, tick: datetime, now: datetime) -> tuple[int, datetime]:
    """After firing `tick` at `now`: how many ticks after it have passed too (they are not
    fired: the one firing stands for them; counted up to `MAX_COUNTED`), and the next tick
    after now."""
    ticks = croniter(pattern, tick.astimezone(zone(timezone)))
    missed = 0
    while missed < MAX_COUNTED:
        following: datetime = ticks.get_next(datetime)
        if following > now:
            return missed, following.astimezone(UTC)
        missed += 1
    return missed, next_tick(pattern, timezone, now)
