"""Writing a followed log: chunked text, or Server-Sent Events; with or without timestamps.

Server-Sent Events (`Accept: text/event-stream`) carry each piece of the log as a `log` event
whose `id` is the byte offset in the log after it, so a browser that reconnects sends it back
as `Last-Event-ID` and gets only what it lacks. The stream ends with an `end` event (the final
status) whose id is `end`: a browser that reconnects after it anyway is answered 204, which by
the specification stops it from trying again.

With `timestamps=true` every line starts with the time the node read it (RFC 3339, UTC,
microseconds) and its stream, as `docker logs -t` prints them. The lines written before the
follower came, and those of a finished execution, were kept without their times: they get the
execution's start time and the stream `-`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from datetime import UTC, datetime

from aiohttp import web

from spinlet.domain import Execution
from spinlet.livelogs import Chunk

__all__ = ["END_ID", "LineStamps", "sse_event", "stream_log"]

#: The id of the last event of a stream: a reconnect that sends it is answered 204.
END_ID = "end"
#: The stream of lines whose stream and time were not kept.
UNKNOWN_STREAM = "-"


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LineStamps:
    """Prefixes each line of a log with its time and stream; a line continued by the next
    chunk is prefixed once (by its first chunk's time and stream)."""

    def __init__(self, unknown_time: float) -> None:
        self.unknown_time = unknown_time
        self._line_start = True

    def stamp(self, chunk: Chunk) -> str:
        text = chunk.data.decode("utf-8", "replace")
        t = chunk.t if chunk.t is not None else self.unknown_time
        prefix = f"{rfc3339(t)} {chunk.stream or UNKNOWN_STREAM} "
        out = []
        for line in text.splitlines(keepends=True):
            out.append(prefix + line if self._line_start else line)
            self._line_start = line.endswith(("\n", "\r"))
        return "".join(out)


def sse_event(event: str, data: str, event_id: str | None = None) -> bytes:
    """One event; the lines of `data` each as a `data:` line (a client joins them with
    newlines, so a text ending with one ends with an empty `data:` line)."""
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines += [
        f"data: {line}" for line in data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    ]
    return ("\n".join(lines) + "\n\n").encode()


async def stream_log(
    request: web.Request,
    execution: Execution,
    pieces: AsyncGenerator[Chunk | Execution],
    *,
    sse: bool,
    timestamps: bool,
) -> web.StreamResponse:
    """Send the log as it grows; the response ends when the execution ends (with SSE, after an
    `end` event), or early when this follower fell too far behind (dropped)."""
    response = web.StreamResponse(
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.content_type = "text/event-stream" if sse else "text/plain"
    response.charset = "utf-8"
    response.enable_chunked_encoding()
    await response.prepare(request)
    started = execution.started_at or execution.created_at
    stamps = LineStamps(started.timestamp()) if timestamps else None
    try:
        async for piece in pieces:
            if isinstance(piece, Execution):
                if sse:
                    end = {"status": piece.status.value, "status_reason": piece.status_reason}
                    await response.write(sse_event("end", json.dumps(end), END_ID))
                break
            text = stamps.stamp(piece) if stamps else piece.data.decode("utf-8", "replace")
            if sse:
                await response.write(sse_event("log", text, str(piece.end)))
            else:
                await response.write(text.encode())
    finally:  # a client gone: stop following now, not when collected
        await pieces.aclose()
    await response.write_eof()
    return response
