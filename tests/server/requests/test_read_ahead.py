"""ReadAhead: a clip read on its own thread ahead of the sender (app/clipstore)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.clipstore import LocalClipStore, ReadAhead


class CountingSource:
    """Chunks of a fixed size; counts how many were taken and notes when it is closed."""

    def __init__(self, count: int, size: int, fail_at: int | None = None) -> None:
        self.count, self.size, self.fail_at = count, size, fail_at
        self.taken = 0
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self.taken == self.fail_at:
            raise OSError("disk read failed")
        if self.taken == self.count:
            raise StopIteration
        self.taken += 1
        return bytes([self.taken % 256]) * self.size

    def close(self) -> None:
        self.closed.set()


def test_a_stored_blob_arrives_whole_and_in_order(tmp_path: Path) -> None:
    store = LocalClipStore(tmp_path)
    data = os.urandom(5 * 1024 * 1024 + 17)
    writer = store.writer("k", max_size=len(data))
    writer.write(data)
    writer.commit()

    async def download() -> bytes:
        reader = ReadAhead(store.read("k", chunk_size=256 * 1024), max_ahead=1024 * 1024)
        try:
            return b"".join([chunk async for chunk in reader.chunks()])
        finally:
            reader.close()

    assert asyncio.run(download()) == data


def test_the_reader_stays_at_most_max_ahead_in_front() -> None:
    source = CountingSource(count=200, size=100)

    async def slow_download() -> int:
        reader = ReadAhead(source, max_ahead=1000)
        received = 0
        async for chunk in reader.chunks():
            received += 1
            # Read (taken) but not yet sent: at most max_ahead bytes plus the chunk that
            # crossed it, plus the one in the reader's hand.
            assert (source.taken - received) * 100 <= 1000 + 2 * 100
            for _ in range(5):
                await asyncio.sleep(0)
            assert len(chunk) == 100
        reader.close()
        return received

    assert asyncio.run(slow_download()) == 200
    assert source.closed.wait(10)


def test_a_read_error_reaches_the_sender() -> None:
    source = CountingSource(count=50, size=10, fail_at=7)

    async def download() -> int:
        reader = ReadAhead(source)
        received = 0
        try:
            async for _ in reader.chunks():
                received += 1
        finally:
            reader.close()
        return received

    with pytest.raises(OSError, match="disk read failed"):
        asyncio.run(download())
    assert source.closed.wait(10)


def test_close_stops_the_reader_and_closes_the_source() -> None:
    source = CountingSource(count=10_000, size=1000)

    async def abandoned_download() -> None:
        reader = ReadAhead(source, max_ahead=10_000)
        chunks = reader.chunks()
        await chunks.__anext__()  # the client goes away after the first chunk
        reader.close()
        await chunks.aclose()

    asyncio.run(abandoned_download())
    assert source.closed.wait(10)
    assert source.taken < 100  # stopped near max_ahead, not at the end of the source


def test_close_before_reading_closes_the_source() -> None:
    source = CountingSource(count=3, size=1)
    ReadAhead(source).close()
    assert source.closed.is_set() and source.taken == 0
