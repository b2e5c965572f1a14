"""Following an execution's log as it is written: what `executions log -f` and
`invoke --follow` share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from spinlet.client import Client

#: Seconds to wait, once a followed log has ended, for the execution's record to be final.
#: The node ends the log when the execution ends, so the record is final at once or nearly;
#: a log ends first only when the node dropped a reader that fell too far behind.
SETTLE = 5.0
#: How much of the end of a followed log is kept, to tell whether it ended with a traceback.
TAIL = 64 * 1024


def print_log(
    api: Client, execution_id: str, *, timestamps: bool = False, err: bool = False
) -> str:
    """Print the execution's log as it arrives, until the node ends it; return the end of
    what was printed (at most `TAIL` characters)."""
    tail = ""
    for text in api.executions.follow(execution_id, timestamps=timestamps):
        click.echo(text, nl=False, err=err)  # click flushes: each piece shows at once
        tail = (tail + text)[-TAIL:]
    return tail


def settled(api: Client, execution_id: str) -> dict[str, Any]:
    """The record once its log has ended: final, unless the node stopped sending the log
    before the execution ended (then as it is after `SETTLE` seconds)."""
    return api.executions.get(execution_id, wait=True, timeout=SETTLE)


def cut_short(record: dict[str, Any]) -> str:
    """Why a followed log ended while its execution goes on."""
    return (
        f"the log of execution {record['id']} ended while it is still {record['status']} (the "
        "node stops sending to a reader that falls too far behind)"
    )
