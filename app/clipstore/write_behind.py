"""Feed a BlobWriter from the event loop without making the loop wait for the disk.

A streamed upload has three costs per byte: receiving it (the event loop), hashing it and
writing it (the writer). `WriteBehind` runs the writer on a thread of its own, so all three
overlap (hashlib and file writes release the GIL), and holds at most `max_pending` bytes
between them: past that, `write` waits for the writer to catch up, which stops reading the
socket and so slows the sender. A dedicated thread rather than the shared thread pool: a 1 GiB
upload is thousands of chunks, and a pool round trip for each would cost more than it saves.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading

from starlette.concurrency import run_in_threadpool

from app.clipstore.store import BlobWriter

MAX_PENDING = 8 * 1024 * 1024


class WriteBehind:
    """Writes chunks on a thread; `finish` waits for the last one, `close` discards.

    Always `close` at the end (after a commit it changes nothing); the writer is never used
    from two threads at once.
    """

    def __init__(self, writer: BlobWriter, max_pending: int = MAX_PENDING) -> None:
        self.writer = writer
        self._max_pending = max_pending
        self._loop = asyncio.get_running_loop()
        self._chunks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0  # bytes queued and not yet written
        self._room: asyncio.Event | None = None  # set once the writer has caught up
        self._error: BaseException | None = None
        self._discard = False
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="clip-writer", daemon=True)
        self._thread.start()

    async def write(self, chunk: bytes) -> None:
        """Queue a chunk; waits while more than `max_pending` bytes are queued."""
        self._raise_error()
        with self._lock:
            self._pending += len(chunk)
            room = None
            if self._pending > self._max_pending:
                room = self._room = asyncio.Event()
        self._chunks.put(chunk)
        if room is not None:
            await room.wait()
            self._raise_error()

    async def finish(self) -> None:
        """Wait until every queued chunk is written; raises the writer's error if any."""
        self._chunks.put(None)
        await run_in_threadpool(self._thread.join)
        self._raise_error()

    async def close(self) -> None:
        """Abort whatever was not committed and wait for the writer thread to end.

        The thread aborts the writer itself once done with the chunk in hand, so if this wait
        is cancelled the temporary file still goes.
        """
        with self._lock:
            self._discard = True
            stopped = self._stopped
        if stopped:
            self.writer.abort()
            return
        self._chunks.put(None)
        await run_in_threadpool(self._thread.join)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (chunk := self._chunks.get()) is not None:
            if self._error is None and not self._discard:
                try:
                    self.writer.write(chunk)
                except Exception as error:  # handed to the event loop by write / finish
                    self._error = error
            with self._lock:
                self._pending -= len(chunk)
                caught_up = self._pending <= self._max_pending // 2 or self._error is not None
                if self._room is not None and caught_up:
                    room, self._room = self._room, None
                    # RuntimeError: the loop closed (shutdown), so nobody waits any more.
                    with contextlib.suppress(RuntimeError):
                        self._loop.call_soon_threadsafe(room.set)
        with self._lock:
            self._stopped = True
            discard = self._discard
        if discard:
            self.writer.abort()
