"""Sealing or opening one file's payload in several processes (c2sp.org/age, "Payload").

STREAM fixes every chunk's place in advance: chunk i holds plaintext bytes
[i * 64 KiB, (i + 1) * 64 KiB) and sits at ciphertext offset i * (64 KiB + 16), its nonce
is the counter i, and only the last chunk carries the final flag. So a file's chunks can
be split into contiguous ranges ("tasks"), each sealed (or opened) by some worker and
written at its exact offset in a preallocated output, with results byte-identical to the
one-thread pipeline.

Workers are forked processes. cryptography 50 releases the GIL inside its AEAD calls (see
`porchlight.age.pipeline`), so threads in one process could do the same work without the
forks; tried on 1 GiB, two threads running this module's worker loop used a median
0.02-0.07 s less CPU than two workers (sealing 1.10 s against 1.16 s, opening 1.12 s
against 1.14 s, 6 alternations at load 10-11; the same direction at load 4-5), about
2-5 %, while pyproject still allows releases of cryptography not checked for the GIL.

Tasks are small (8 MiB) and handed out on demand through a pipe the parent fills before
forking, so a worker that the scheduler slows down (other processes on its core) does not
leave the other idle at the end, as fixed halves would. Each worker maps the source
read-only, transforms 1 MiB blocks into one reused buffer and `pwrite`s them, dropping the
pages it has used from its mapping so memory stays flat.

Transforming straight into a shared writable mapping of the (fallocated) output instead,
to save pwrite's copy into the page cache, was tried and costs more (Linux 6.18, ext4,
1 GiB): a page-cache folio faulted in over reserved blocks is zero-filled first (perf:
`zero_user_segments` under `ext4_mpage_readpages`, 9 % of samples, against 8.5 % for
pwrite's `copy_folio_from_iter_atomic`), and every page then pays a write fault,
`page_mkwrite` and an unmap; the one saving, workers no longer taking turns at the
output's inode lock (`rwsem_spin_on_owner`, 4 % of pwrite's samples), is smaller. Library
call alone, alternated 6-8 times at load 1-1.5, median CPU: ranges faulted in with
MADV_POPULATE_WRITE under MADV_SEQUENTIAL, sealing 1.94 s against 1.19 s, opening 1.77 s
against 1.17 s; under MADV_HUGEPAGE instead (one fault a 2 MiB folio), 1.24 s against
0.97 s and 1.26 s against 0.93 s. In bench/seal.py (4 alternations of 5 runs, load
0.5-1.6) with MADV_HUGEPAGE: sealing a wash (call CPU 0.93-1.10 s against 0.82-1.10 s),
opening 1.43-1.73 s against 0.93-1.16 s (46-55 % of cp's median speed against 64-96 %),
peak RSS 42 MiB against 30-34 MiB.

Workers report progress and errors to the parent over a pipe and leave with `os._exit`,
never running the parent's cleanup code. The parent kills and reaps every worker before it
returns or raises, so the caller's temporary output can be removed with nobody still
writing to it. A parent killed outright (SIGKILL runs no cleanup) takes its workers with it
on Linux: each asks the kernel for SIGKILL when its parent dies (PR_SET_PDEATHSIG), so none
goes on burning a core on output that can no longer be named.

Forking is only done from a single-threaded process: a fork taken while another thread
holds a lock (in OpenSSL, say) could leave the worker waiting forever for it.
"""

from __future__ import annotations

import errno
import gc
import mmap
import os
import select
import signal
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass

from porchlight.age.errors import AgeError, AuthenticationError, MalformedError
from porchlight.age.pipeline import (
    BLOCK_CHUNKS,
    PARALLEL_FROM,
    WRITE_PIECE,
    Progress,
    Transform,
    opener,
    sealer,
)
from porchlight.age.stream import CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, TAG_SIZE

# Each worker's range is at least this long, so small files do not fan out to many.
_MIN_SHARE = 4 * 1024 * 1024
_MAX_WORKERS = 8
# Drop used source pages from a worker's mapping every this many bytes.
_DROP_EVERY = 8 * BLOCK_CHUNKS * ENCRYPTED_CHUNK_SIZE
# A task is this many chunks (8 MiB of plaintext), or fewer for small files so that every
# worker gets several; huge files get larger tasks so the task list fits in a pipe's buffer.
_TASK_CHUNKS = 8 * BLOCK_CHUNKS
_MAX_TASKS = 4096
_TASK = struct.Struct("<I")

# Messages from a worker: a kind byte and an 8-byte little-endian length or count.
_HEAD = struct.Struct("<cQ")
_PROGRESS = b"P"
_FAILURE = b"E"
# Error kinds a worker can report, so the parent raises the same class with the same text.
_KINDS: dict[str, type[Exception]] = {
    "authentication": AuthenticationError,
    "malformed": MalformedError,
    "age": AgeError,
}


@dataclass(frozen=True)
class Layout:
    """Where a payload's chunks are read from and written to.

    Chunk i occupies [src_start + i * src_chunk, ...) in the source, up to src_end for the
    last one, and is written at dst_start + i * dst_chunk.
    """

    chunks: int
    src_start: int
    src_end: int
    src_chunk: int
    dst_start: int
    dst_chunk: int
    dst_end: int


def seal_layout(plaintext_size: int, header_size: int) -> Layout:
    """The layout of sealing plaintext_size bytes behind a header (and nonce) of header_size."""
    chunks = max(1, -(-plaintext_size // CHUNK_SIZE))
    return Layout(
        chunks=chunks,
        src_start=0,
        src_end=plaintext_size,
        src_chunk=CHUNK_SIZE,
        dst_start=header_size,
        dst_chunk=ENCRYPTED_CHUNK_SIZE,
        dst_end=header_size + plaintext_size + chunks * TAG_SIZE,
    )


def open_layout(payload_start: int, file_size: int) -> Layout:
    """The layout of opening the payload from payload_start to file_size.

    Raises the streaming pipeline's errors, with its messages, for lengths no sequence of
    chunks can have.
    """
    length = file_size - payload_start
    if length <= 0:
        raise AuthenticationError("the payload is empty: the file was truncated")
    chunks = -(-length // ENCRYPTED_CHUNK_SIZE)
    last_size = length - (chunks - 1) * ENCRYPTED_CHUNK_SIZE
    if last_size < TAG_SIZE:
        raise AuthenticationError("the final chunk is cut short: the file was truncated")
    if last_size == TAG_SIZE and chunks > 1:
        raise AuthenticationError("the final chunk is empty, which age forbids")
    return Layout(
        chunks=chunks,
        src_start=payload_start,
        src_end=file_size,
        src_chunk=ENCRYPTED_CHUNK_SIZE,
        dst_start=0,
        dst_chunk=CHUNK_SIZE,
        dst_end=length - chunks * TAG_SIZE,
    )


def worker_count(payload_size: int, requested: int | None = None) -> int:
    """How many workers to use for a payload; 1 means use the streaming pipeline.

    requested overrides the number of usable cores (tests force several workers on a
    one-core machine that way); size and process state can still bring it down to 1.
    """
    if payload_size < PARALLEL_FROM or not hasattr(os, "fork"):
        return 1
    if threading.active_count() > 1:
        return 1
    if requested is None:
        try:
            requested = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            requested = os.cpu_count() or 1
    return max(1, min(requested, _MAX_WORKERS, payload_size // _MIN_SHARE))


def preallocate(fd: int, size: int) -> None:
    """Give the output its final size with its blocks allocated up front, where possible.

    fallocate(2) reserves the blocks in one call, so a full disk fails here, before any
    work, and the workers' writes skip the filesystem's per-block delayed allocation (on
    ext4 that saved about a tenth of the kernel time of sealing a GiB). It is called
    through libc directly: `os.posix_fallocate` falls back to writing every block where
    the filesystem lacks fallocate. There, and wherever it is unavailable, the file is
    only extended.
    """
    try:
        import ctypes  # only the parallel path needs it

        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.fallocate
        call.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        call.restype = ctypes.c_int
    except (ImportError, OSError, AttributeError):
        os.ftruncate(fd, size)
        return
    if call(fd, 0, 0, size) == 0:
        return
    number = ctypes.get_errno()
    if number in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        os.ftruncate(fd, size)
        return
    raise OSError(number, os.strerror(number))


_PR_SET_PDEATHSIG = 1


def _death_signal_setter() -> Callable[[], None]:
    """A function that makes the calling (forked) process receive SIGKILL when its parent
    dies, where Linux's prctl is available; else one that does nothing. Looked up in the
    parent, before forking, so a worker spends no time on it."""
    try:
        import ctypes  # the parallel path already uses it (preallocate)

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (ImportError, OSError, AttributeError):
        return lambda: None
    prctl.restype = ctypes.c_int
    parent = os.getpid()

    def set_death_signal() -> None:
        prctl(
            ctypes.c_int(_PR_SET_PDEATHSIG),
            ctypes.c_ulong(signal.SIGKILL),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
            ctypes.c_ulong(0),
        )
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)

    return set_death_signal


def seal_parallel(
    src_fd: int,
    dst_fd: int,
    layout: Layout,
    key: bytes,
    workers: int,
    progress: Progress | None = None,
) -> None:
    """Seal the source's plaintext into dst_fd (already holding the header) with workers."""
    _run(src_fd, dst_fd, layout, lambda first: sealer(key, first), workers, progress)


def open_parallel(
    src_fd: int,
    dst_fd: int,
    layout: Layout,
    key: bytes,
    workers: int,
    progress: Progress | None = None,
) -> None:
    """Open and authenticate every chunk of the source's payload into dst_fd with workers."""
    _run(src_fd, dst_fd, layout, lambda first: opener(key, first), workers, progress)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    """Write data at offset in pieces (see WRITE_PIECE) that end on multiples of WRITE_PIECE.

    A sealed payload starts after the header, so its blocks start at odd offsets; cut at
    file offsets that are multiples of the piece, every write but a block's first starts
    on a page (and piece) boundary. Sealing 1 GiB with 2 workers, alternated 18 times at
    load 7-11: a median 1.01-1.04 s of CPU against 1.055-1.065 s with pieces cut from
    the block's start (system time 0.38-0.405 s against 0.405-0.425 s). Opened payloads
    start at 0 and are cut as before.
    """
    while data:
        written = os.pwrite(fd, data[: WRITE_PIECE - offset % WRITE_PIECE], offset)
        data = data[written:]
        offset += written


def task_chunks(chunks: int, workers: int) -> int:
    """How many chunks one task holds: a whole number of blocks, several tasks per worker."""
    size = min(_TASK_CHUNKS, chunks // (4 * workers))
    size = max(size, -(-chunks // _MAX_TASKS), BLOCK_CHUNKS)
    return -(-size // BLOCK_CHUNKS) * BLOCK_CHUNKS


def _work(
    src_fd: int,
    dst_fd: int,
    layout: Layout,
    make_transform: Callable[[int], Transform],
    tasks: Iterator[tuple[int, int]],
    report: Callable[[int], None],
) -> None:
    """Transform each task's chunks [first, stop) block by block, writing each at its place."""
    mapping = mmap.mmap(src_fd, layout.src_end, access=mmap.ACCESS_READ)
    view = memoryview(mapping)
    out = bytearray(BLOCK_CHUNKS * max(layout.src_chunk, layout.dst_chunk))
    out_view = memoryview(out)
    mapping.madvise(mmap.MADV_SEQUENTIAL)
    for first, stop in tasks:
        transform = make_transform(first)
        begin = layout.src_start + first * layout.src_chunk
        released = begin // mmap.PAGESIZE * mmap.PAGESIZE
        reported = begin
        for block in range(first, stop, BLOCK_CHUNKS):
            block_stop = min(stop, block + BLOCK_CHUNKS)
            start = layout.src_start + block * layout.src_chunk
            end = min(layout.src_start + block_stop * layout.src_chunk, layout.src_end)
            piece = view[start:end]
            size = transform(piece, block_stop == layout.chunks, out)
            piece.release()
            _pwrite_all(dst_fd, out_view[:size], layout.dst_start + block * layout.dst_chunk)
            # Unmapping used pages keeps RSS flat; the page cache keeps them anyway.
            # Progress goes out at the same pace: a message a block would wake the parent
            # 1024 times a GiB for nothing.
            drop = end // mmap.PAGESIZE * mmap.PAGESIZE
            if drop - released >= _DROP_EVERY or block_stop == stop:
                if drop > released:
                    mapping.madvise(mmap.MADV_DONTNEED, released, drop - released)
                    released = drop
                report(end - reported)
                reported = end
    # The last page of a task can be shared with the next one: drop whatever is left.
    mapping.madvise(mmap.MADV_DONTNEED)


def _take_tasks(tasks_fd: int, layout: Layout, size: int) -> Iterator[tuple[int, int]]:
    """Chunk ranges from the task pipe until it is empty (every write to it came first)."""
    while True:
        data = os.read(tasks_fd, _TASK.size)
        if not data:
            return
        # Every read takes one whole entry: all entries are the same size and were
        # written before any worker started.
        (task,) = _TASK.unpack(data)
        first = task * size
        yield first, min(layout.chunks, first + size)


def _worker_main(
    pipe: int,
    src_fd: int,
    dst_fd: int,
    layout: Layout,
    make_transform: Callable[[int], Transform],
    tasks_fd: int,
    task_size: int,
) -> int:
    """Run one worker in the forked child; the exit status says whether it finished."""

    def send(kind: bytes, value: int, body: bytes = b"") -> None:
        view = memoryview(_HEAD.pack(kind, value) + body)
        while view:
            view = view[os.write(pipe, view) :]

    # The worker's own allocations are short-lived and acyclic; the collector would only
    # walk the parent's objects it inherited.
    gc.disable()
    try:
        _work(
            src_fd,
            dst_fd,
            layout,
            make_transform,
            _take_tasks(tasks_fd, layout, task_size),
            lambda n: send(_PROGRESS, n),
        )
    except BaseException as error:  # every failure goes to the parent
        if isinstance(error, OSError):
            text = f"os\0{error.errno or 0}\0{error.strerror or error}\0{error.filename or ''}"
        else:
            kind = next(
                (name for name, cls in _KINDS.items() if type(error) is cls),
                "other",
            )
            detail = str(error) if kind != "other" else f"{type(error).__name__}: {error}"
            text = f"{kind}\0{detail}"
        body = text.encode("utf-8", "replace")
        with suppress(OSError):
            send(_FAILURE, len(body), body)
        return 1
    return 0


def _failure(body: bytes) -> BaseException:
    kind, _, rest = body.decode("utf-8", "replace").partition("\0")
    if kind == "os":
        number, strerror, filename = rest.split("\0", 2)
        return OSError(int(number), strerror, filename or None)
    cls = _KINDS.get(kind)
    if cls is not None:
        return cls(rest)
    return AgeError(f"a payload worker failed: {rest}")


def _run(
    src_fd: int,
    dst_fd: int,
    layout: Layout,
    make_transform: Callable[[int], Transform],
    workers: int,
    progress: Progress | None,
) -> None:
    """Fork the workers, relay their progress, and raise the first failure after reaping all."""
    size = task_chunks(layout.chunks, workers)
    count = -(-layout.chunks // size)
    workers = min(workers, count)
    children: dict[int, int] = {}  # read end of the pipe -> pid
    buffers: dict[int, bytes] = {}
    reaped: set[int] = set()
    failure: BaseException | None = None
    done = 0
    # The whole task list goes into the pipe before any worker exists (at most 16 KiB,
    # under the pipe's 64 KiB buffer), and the write end is closed: a worker reading the
    # pipe empty knows every task is taken.
    tasks_fd, tasks_write = os.pipe()
    try:
        entries = memoryview(b"".join(_TASK.pack(task) for task in range(count)))
        while entries:
            entries = entries[os.write(tasks_write, entries) :]
    finally:
        os.close(tasks_write)
    die_with_parent = _death_signal_setter()
    try:
        for _ in range(workers):
            read_end, write_end = os.pipe()
            # Flush so the child cannot write our buffered output a second time.
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child, which reports over the pipe
                status = 1
                try:
                    die_with_parent()
                    os.close(read_end)
                    for other in children:
                        os.close(other)
                    status = _worker_main(
                        write_end, src_fd, dst_fd, layout, make_transform, tasks_fd, size
                    )
                finally:
                    os._exit(status)
            os.close(write_end)
            children[read_end] = pid
            buffers[read_end] = b""
        open_pipes = set(children)
        while open_pipes and failure is None:
            ready, _, _ = select.select(list(open_pipes), [], [])
            for fd in ready:
                data = os.read(fd, 65536)
                if not data:
                    # The worker has exited (or is about to): one that failed without a
                    # word, killed by a signal say, stops the others at once too.
                    open_pipes.discard(fd)
                    _, status = os.waitpid(children[fd], 0)
                    reaped.add(fd)
                    if os.waitstatus_to_exitcode(status) != 0:
                        failure = failure or AgeError(_death(status))
                    continue
                buffer = buffers[fd] + data
                while len(buffer) >= _HEAD.size:
                    kind, value = _HEAD.unpack_from(buffer)
                    if kind == _PROGRESS:
                        buffer = buffer[_HEAD.size :]
                        done += value
                        if progress is not None:
                            progress(done)
                        continue
                    if len(buffer) < _HEAD.size + value:
                        break
                    failure = failure or _failure(buffer[_HEAD.size : _HEAD.size + value])
                    buffer = buffer[_HEAD.size + value :]
                buffers[fd] = buffer
                if failure is not None:
                    break
    except BaseException:
        _kill(children, reaped)
        raise
    finally:
        if failure is not None:
            _kill(children, reaped)
        for fd, pid in children.items():
            if fd not in reaped:
                os.waitpid(pid, 0)
            os.close(fd)
        os.close(tasks_fd)
    if failure is not None:
        raise failure


def _kill(children: dict[int, int], reaped: set[int]) -> None:
    for fd, pid in children.items():
        if fd not in reaped:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _death(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        return f"a payload worker process was killed by signal {-code}; no output was kept"
    return f"a payload worker process exited with status {code}; no output was kept"


__all__ = [
    "PARALLEL_FROM",
    "Layout",
    "open_layout",
    "open_parallel",
    "preallocate",
    "seal_layout",
    "seal_parallel",
    "worker_count",
]
