"""One camera agent per data directory: an exclusive flock on ``<data>/.lock``.

Two agents on one directory would destroy each other's work: the second one's crash recovery
deletes the first one's clip in progress as an unfinished file. So `porchlight device run`
takes this lock before its recovery and holds it while it records; the lock file holds the
holder's pid so a second agent can say who is running. The kernel drops the lock when the
process dies, so a power cut or kill -9 leaves nothing stale to clean up.

Only the agent takes it. The other commands cooperate with a running agent without it:
`export`, `clips` and `status` only read finished clips; `consent` and `decline` work in
``clips/outbox/``, which recovery leaves alone, and change only pins in the SQLite index.
This module imports nothing heavy, so `status` can ask whether an agent is running.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

LOCK_NAME = ".lock"


class AgentRunning(Exception):
    """Another process holds the data directory's agent lock."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        holder = f" (pid {pid})" if pid else ""
        super().__init__(f"another camera agent{holder} is running on {data_dir}")
        self.message = str(self)
        self.pid = pid


def _holder_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(os.pread(fd, 32, 0).decode("ascii").strip()) or None
    return None


class AgentLock:
    """The agent's exclusive lock on its data directory, held from `acquire` to `release`."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._fd: int | None = None

    def acquire(self, *, attempts: int = 20, interval: float = 0.05) -> None:
        """Take the lock or raise AgentRunning. A few short retries ride over `status`, which
        holds a shared lock for an instant to ask whether an agent runs."""
        fd = os.open(self.data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            for attempt in range(attempts):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == attempts - 1:
                        raise AgentRunning(self.data_dir, _holder_pid(fd)) from None
                    time.sleep(interval)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def running_agent(data_dir: Path) -> int | None:
    """The pid of the agent running on ``data_dir`` (0 if it cannot be read), or None."""
    try:
        fd = os.open(data_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _holder_pid(fd) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
