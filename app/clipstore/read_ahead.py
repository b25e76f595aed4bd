"""Read a blob on a thread of its own, ahead of the event loop that sends it.

Starlette streams a blocking iterator by handing every `next()` to the thread pool and waiting
for it: reading and sending take turns, and each 1 MiB costs two thread switches, which on a
busy machine are where a download's time goes. `ReadAhead` keeps one reader thread up to
`max_ahead` bytes in front of the sender instead: the sender waits only when the disk is slower
than the network, and the reader only when the network is slower than the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterator

MAX_AHEAD = 8 * 1024 * 1024


class ReadAhead:
    """`chunks()` yields what the reader thread read; `close()` stops it (always call it)."""

    def __init__(self, source: Iterator[bytes], max_ahead: int = MAX_AHEAD) -> None:
        self._source = source
        self._max_ahead = max_ahead
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # the reader waits here when ahead
        self._ready: deque[bytes] = deque()
        self._ahead = 0  # bytes in _ready
        self._finished = False  # the source is exhausted (or failed: _error)
        self._error: BaseException | None = None
        self._closed = False
        self._arrival: asyncio.Event | None = None  # the sender waits here when behind
        self._started = False
        self._loop: asyncio.AbstractEventLoop  # the sender's, known once it starts reading

    async def chunks(self) -> AsyncIterator[bytes]:
        """The source's chunks; the reader thread starts on the first call."""
        with self._lock:
            if self._started or self._closed:
                raise RuntimeError("a ReadAhead is read once")
            self._started = True
            self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._run, name="clip-reader", daemon=True).start()
        while True:
            with self._lock:
                if self._ready:
                    chunk = self._ready.popleft()
                    self._ahead -= len(chunk)
                    if self._ahead <= self._max_ahead // 2:
                        self._room.notify()
                    arrival = None
                elif self._finished:
                    if self._error is not None:
                        raise self._error
                    return
                else:
                    arrival = self._arrival = asyncio.Event()
            if arrival is None:
                yield chunk
            else:
                await arrival.wait()

    def close(self) -> None:
        """Stop reading; the source is closed (by the reader, after the chunk in hand)."""
        with self._lock:
            started, self._closed = self._started, True
            self._room.notify()
        if not started:
            self._close_source()

    def _run(self) -> None:
        try:
            for chunk in self._source:
                with self._lock:
                    while self._ahead > self._max_ahead and not self._closed:
                        self._room.wait()
                    if self._closed:
                        return
                    self._ready.append(chunk)
                    self._ahead += len(chunk)
                    self._wake_sender()
        except Exception as error:  # handed to the sender by chunks()
            with self._lock:
                self._error = error
        finally:
            with self._lock:
                self._finished = True
                self._wake_sender()
            self._close_source()

    def _close_source(self) -> None:
        close = getattr(self._source, "close", None)
        if close is not None:
            close()

    def _wake_sender(self) -> None:
        """With the lock held: let a waiting sender go on."""
        if self._arrival is not None:
            arrival, self._arrival = self._arrival, None
            # RuntimeError: the loop closed (shutdown), so nobody waits any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(arrival.set)
