"""WriteBehind: a clip writer on its own thread, fed from the event loop (app/clipstore)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import threading
from pathlib import Path

import pytest

from app.clipstore import BlobTooLarge, BlobWriter, LocalClipStore, StoredBlob, WriteBehind


class GatedWriter(BlobWriter):
    """A real local writer whose writes wait until the test opens the gate."""

    def __init__(self, inner: BlobWriter) -> None:
        self.inner = inner
        self.gate = threading.Event()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.gate.wait()
        self.inner.write(chunk)
        self.size = self.inner.size

    def sha256(self) -> str:
        return self.inner.sha256()

    def commit(self, *, replace: bool = False) -> StoredBlob:
        return self.inner.commit(replace=replace)

    def abort(self) -> None:
        self.inner.abort()


def test_every_chunk_is_written_in_order(tmp_path: Path) -> None:
    store = LocalClipStore(tmp_path)
    rng = random.Random(6)
    chunks = [os.urandom(rng.randrange(1, 200_000)) for _ in range(60)]
    data = b"".join(chunks)

    async def upload() -> StoredBlob:
        writer = store.writer("k", max_size=len(data))
        pipeline = WriteBehind(writer, max_pending=256 * 1024)
        try:
            for chunk in chunks:
                await pipeline.write(chunk)
            await pipeline.finish()
            assert writer.size == len(data)
            return writer.commit()
        finally:
            await pipeline.close()

    blob = asyncio.run(upload())
    assert blob.sha256 == hashlib.sha256(data).hexdigest()
    assert b"".join(store.read("k")) == data
    assert list(store.temp_dir.iterdir()) == []


def test_a_slow_writer_holds_back_the_sender(tmp_path: Path) -> None:
    store = LocalClipStore(tmp_path)
    gated = GatedWriter(store.writer("k", max_size=1000))

    async def upload() -> None:
        pipeline = WriteBehind(gated, max_pending=100)
        try:
            await pipeline.write(b"a" * 60)  # under the limit: queued, no wait
            second = asyncio.create_task(pipeline.write(b"b" * 60))  # over it: waits
            for _ in range(20):
                await asyncio.sleep(0)
            assert not second.done()  # the writer has written nothing yet
            gated.gate.set()
            await second
            await pipeline.finish()
            gated.commit()
        finally:
            await pipeline.close()

    asyncio.run(upload())
    assert b"".join(store.read("k")) == b"a" * 60 + b"b" * 60


def test_a_writer_error_reaches_the_event_loop_and_nothing_stays(tmp_path: Path) -> None:
    store = LocalClipStore(tmp_path)

    async def upload() -> None:
        pipeline = WriteBehind(store.writer("k", max_size=100))
        try:
            await pipeline.write(b"x" * 80)
            await pipeline.write(b"x" * 80)  # over max_size: refused on the writer's thread
            await pipeline.finish()
        finally:
            await pipeline.close()

    with pytest.raises(BlobTooLarge):
        asyncio.run(upload())
    assert not store.exists("k") and list(store.temp_dir.iterdir()) == []


def test_close_without_finish_discards_the_bytes(tmp_path: Path) -> None:
    store = LocalClipStore(tmp_path)
    gated = GatedWriter(store.writer("k", max_size=1 << 20))

    async def upload() -> None:
        pipeline = WriteBehind(gated)
        for _ in range(10):
            await pipeline.write(b"y" * 1000)
        gated.gate.set()
        await pipeline.close()  # e.g. the client went away mid-upload

    asyncio.run(upload())
    assert not store.exists("k") and list(store.temp_dir.iterdir()) == []
