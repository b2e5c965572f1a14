"""Announcements to other nodes when PostgreSQL cannot be reached: dropped after one failed
attempt for a moment, not each waiting for a connection of its own."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from spinlet.store.notify import FINISHED, Notifier


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # nothing listens there once the socket is closed


async def test_announcements_after_a_failure_are_dropped_for_a_moment(
    caplog: pytest.LogCaptureFixture,
) -> None:
    notifier = Notifier(f"postgresql+asyncpg://spinlet:x@127.0.0.1:{closed_port()}/spinlet")
    with caplog.at_level(logging.WARNING, logger="spinlet.store.notify"):
        await asyncio.gather(*(notifier.send(FINISHED, str(i)) for i in range(200)))
    failures = [r for r in caplog.records if "could not notify" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    await notifier.stop()
