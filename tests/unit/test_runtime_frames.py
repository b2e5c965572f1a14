"""Reading a streamed `/run` (runtime protocol v2): chunks and frames cut anywhere."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from spinlet.errors import RuntimeBackendError
from spinlet.runtime.protocol import _FrameReader

FRAMES = [
    {"type": "log", "stream": "stdout", "data": "hello ✓\n", "t": 1.5},
    {"type": "log", "stream": "stderr", "data": "warn\n", "t": 2.0},
    {"type": "result", "result": {"answer": 42}, "duration_ms": 3.0, "logs": "hello ✓\n"},
]


def chunked(body: bytes, size: int) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


async def read(stream: bytes) -> tuple[list[tuple[str, str, float]], dict[str, Any]]:
    reader = asyncio.StreamReader()
    reader.feed_data(stream)
    reader.feed_eof()
    logs: list[tuple[str, str, float]] = []
    frames = _FrameReader(lambda stream, data, t: logs.append((stream, data, t)))
    await frames.read(reader)
    return logs, await frames.result()


@pytest.mark.parametrize("size", [1, 2, 7, 64, 100_000])
async def test_frames_cut_across_chunks_are_read_whole_and_in_order(size: int) -> None:
    body = b"".join(json.dumps(frame).encode() + b"\n" for frame in FRAMES)
    logs, result = await read(chunked(body, size))
    assert logs == [("stdout", "hello ✓\n", 1.5), ("stderr", "warn\n", 2.0)]
    assert result == {"result": {"answer": 42}, "duration_ms": 3.0}


@pytest.mark.parametrize(
    ("stream", "says"),
    [
        (chunked(b'{"type": "log", "stream": "stdout", "data": "x"}\n', 64), "without a result"),
        (chunked(b'{"type": "result", "result": 1}', 64), "in the middle of a frame"),
        (chunked(b"not json\n", 64), "not JSON"),
        (chunked(b'{"type": "log", "stream": "fd3", "data": "x"}\n', 64), "malformed log"),
        (b"zz\r\n", "malformed chunk size"),
    ],
)
async def test_a_stream_that_breaks_the_protocol_is_a_backend_error(
    stream: bytes, says: str
) -> None:
    with pytest.raises(RuntimeBackendError, match=says):
        await read(stream)


async def test_a_stream_cut_short_is_an_incomplete_read() -> None:
    body = json.dumps(FRAMES[0]).encode() + b"\n"
    with pytest.raises(asyncio.IncompleteReadError):
        await read(chunked(body, 64)[:-20])
