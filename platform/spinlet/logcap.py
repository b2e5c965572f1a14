"""The log cap: an execution's log keeps its head and its tail.

The end of a long log is where its error usually is (the runtime puts a function's traceback
last), so a log longer than the cap keeps the first half of the cap and the last half, each cut at
a line boundary, with one marker between them saying how many bytes were dropped.

The runtime caps the log as it captures it (`runtimes/python/server.py`, `fit_log`: the same rule,
written again there because the runtime is a standalone file of the standard library, and a
runtime in another language would write it again too). The node caps again when it records the
log: the final guarantee, whatever the runtime did, counting the bytes the runtime dropped in the
one marker it keeps.
"""

from __future__ import annotations

import codecs
import re

TRUNCATION_MARKER = "\n[spinlet: log truncated, {dropped} bytes dropped]\n"
_MARKER = re.compile(rb"\n\[spinlet: log truncated, (\d+) bytes dropped\]\n")


def cap_logs(logs: str, limit: int) -> str:
    """At most `limit` bytes of the log, its head and its tail, and a marker saying how many
    bytes were dropped (counting those the runtime dropped already: its marker becomes this one).

    NUL characters, which PostgreSQL's text cannot hold, become U+FFFD, as undecodable bytes do.
    """
    logs = logs.replace("\x00", "\ufffd")
    data = logs.encode("utf-8", "replace")
    if len(data) <= limit:
        return logs
    head, gap, tail = data, 0, b""
    if (marker := _MARKER.search(data)) is not None:  # the runtime's: the first, in its head
        head, gap, tail = data[: marker.start()], int(marker[1]), data[marker.end() :]
    return fit_log(head, tail, gap, limit)


def split_capped(data: bytes) -> tuple[bytes, int, bytes]:
    """A capped log's head, how many bytes its marker says were dropped, and its tail (a log
    without a marker is all head): where each byte was in the log as written."""
    if (marker := _MARKER.search(data)) is None:
        return data, 0, b""
    return data[: marker.start()], int(marker[1]), data[marker.end() :]


def fit_log(head: bytes, tail: bytes, gap: int, limit: int) -> str:
    """A log of `head`, then `gap` bytes not kept, then `tail`, in at most `limit` bytes.

    Within the limit (and nothing dropped), it is kept whole. Else the first half of the limit
    and the last half are kept, each cut at a line boundary (a line longer than its half is cut
    at a character boundary), with `TRUNCATION_MARKER` between them.
    """
    if not gap and len(head) + len(tail) <= limit:
        return (head + tail).decode("utf-8", "replace")
    if not gap:
        head = tail = head + tail
    first = head[: _head_end(head, limit // 2)]
    last = tail[_tail_start(tail, limit - limit // 2) :]
    total = len(head) + gap + len(tail) if gap else len(head)
    dropped = total - len(first) - len(last)
    return (
        first.decode("utf-8", "replace")
        + TRUNCATION_MARKER.format(dropped=dropped)
        + last.decode("utf-8", "replace")
    )


def _head_end(data: bytes, room: int) -> int:
    """Where the head of `data` (bytes are dropped after it) ends: after the last whole line in
    its first `room` bytes, or after the last whole character when they hold no line's end."""
    end = min(room, len(data))
    newline = data.rfind(b"\n", 0, end)
    if newline >= 0:
        return newline + 1
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    decoder.decode(data[:end], final=False)  # keeps an unfinished character back
    return end - len(decoder.getstate()[0])


def _tail_start(data: bytes, room: int) -> int:
    """Where the tail of `data` starts: at the first whole line in its last `room` bytes, or at
    the first whole character when no line starts there."""
    start = len(data) - room
    if start <= 0:
        return 0
    if data[start - 1] == 0x0A:
        return start
    newline = data.find(b"\n", start)
    if 0 <= newline < len(data) - 1:
        return newline + 1
    begin = start
    while start < len(data) and start - begin < 3 and data[start] & 0xC0 == 0x80:
        start += 1  # a byte that continues a character: start at the next one
    return start
