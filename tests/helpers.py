"""Small helpers shared by the test suites (no fixtures here: those live in conftest files)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import textwrap
import time
import zipfile
from collections.abc import Awaitable, Callable

PACKAGE_TIME = (2020, 1, 1, 0, 0, 0)

#: A function that notes each run of it in a file (`marks`), then sleeps for `seconds`.
MARKING = """
import time

def main(event, context):
    with open(event["marks"], "a") as marks:
        marks.write(context.execution_id + "\\n")
    time.sleep(event["seconds"])
    return "done"
"""


def make_package(
    source: str, *, module: str = "main", extra: dict[str, str] | None = None
) -> bytes:
    """A function package: a zip holding `<module>.py` with `source` (dedented), plus `extra`.

    The entries carry a fixed timestamp, so the same sources always give the same bytes (and
    the same content hash), whenever they are built.
    """
    buffer = io.BytesIO()
    files = {f"{module}.py": source, **(extra or {})}
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            entry = zipfile.ZipInfo(name, date_time=PACKAGE_TIME)
            archive.writestr(entry, textwrap.dedent(text), zipfile.ZIP_DEFLATED)
    return buffer.getvalue()


def zipped(files: dict[str, str] | dict[str, bytes]) -> bytes:
    """A zip of exactly `files` (name → content), as written, without dedenting."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def package_hash(package: bytes) -> str:
    return hashlib.sha256(package).hexdigest()


async def eventually(
    check: Callable[[], Awaitable[bool]], *, within: float = 10.0, interval: float = 0.02
) -> None:
    """Wait until `check()` is true; fail the test after `within` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s")
        await asyncio.sleep(interval)


async def database_outage(database_url: str, seconds: float) -> int:
    """What a restart of PostgreSQL does to a database's clients: every connection to it ends,
    and for `seconds` no new one is let in. Returns how many connections were ended."""
    import asyncpg
    from sqlalchemy import make_url

    url = make_url(database_url)
    admin_url = url.set(drivername="postgresql", database="postgres")
    admin = await asyncpg.connect(admin_url.render_as_string(hide_password=False))
    try:
        await admin.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS false')
        ended: int = await admin.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1) AS ended",
            url.database,
        )
        await asyncio.sleep(seconds)
        return ended
    finally:
        await admin.execute(f'ALTER DATABASE "{url.database}" ALLOW_CONNECTIONS true')
        await admin.close()
