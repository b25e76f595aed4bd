"""The three-stage file pipeline behind `encrypt_file` and `decrypt_file` (c2sp.org/age STREAM).

Reading, sealing (or opening) and writing overlap: a writer thread and, for sources that
cannot be mapped, a reader thread spend their time in system calls, which release the
GIL, while the calling thread runs ChaCha20-Poly1305 over 1 MiB blocks of 16 chunks, so
the crypto itself stays on one core; `porchlight.age.parallel` spreads large files over
several. (cryptography 50.0.2 does release the GIL inside `encrypt_into` and
`decrypt_into`: a Python thread spinning beside one 64 MiB call kept 6-9 M iterations a
second, against 0.5-0.8 M beside `bytearray.count`, which holds the GIL. Older releases,
which pyproject still allows, were not checked.) Regular source files are mapped instead
of read, saving one copy of every byte. Memory is bounded by fixed buffer pools,
whatever the file size.
"""

from __future__ import annotations

import io
import mmap
import os
import queue
import stat
import threading
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager, suppress
from typing import BinaryIO, TypeAlias, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from porchlight.age.errors import AuthenticationError
from porchlight.age.stream import CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, TAG_SIZE, chunk_nonce

Progress: TypeAlias = Callable[[int], None]

BLOCK_CHUNKS = 16
# Below this many payload bytes `porchlight.age.parallel`'s fork costs more than a second
# core saves. Defined here, so that `files` tells a small file from a large one without
# importing that module and what it imports (dataclasses and inspect, ~10 ms of start-up).
PARALLEL_FROM = 8 * 1024 * 1024
_QUEUE_DEPTH = 3
# Enough buffers for a full queue plus the one each stage holds (the reader holds two).
_POOL = _QUEUE_DEPTH + 4


class _Cancelled(Exception):
    pass


class _Pipe:
    """A bounded queue whose waits end when the pipeline is cancelled."""

    def __init__(self, cancelled: threading.Event, depth: int = _QUEUE_DEPTH) -> None:
        self._queue: queue.Queue[object] = queue.Queue(depth)
        self._cancelled = cancelled

    def put(self, item: object) -> None:
        while not self._cancelled.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue
        raise _Cancelled

    def get(self) -> object:
        while not self._cancelled.is_set():
            try:
                return self._queue.get(timeout=0.05)
            except queue.Empty:
                continue
        raise _Cancelled


def _readinto_full(src: BinaryIO, buffer: bytearray) -> int:
    view = memoryview(buffer)
    got = 0
    while got < len(buffer):
        n = src.readinto(view[got:])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


# Writes go out in pieces of at most this size. On the 2-core VM this was measured on
# (Linux 6.18, ext4), writing 1 GiB to a new file in page-aligned 1 MiB writes cost twice
# the system time of 512 KiB or smaller writes (dd: 0.6-0.9 s against 0.38 s), and 4 MiB
# writes five times; the kernel builds page-cache folios as large as each write, and
# large fresh folios were the slow ones. Smaller writes cost nothing measurable.
WRITE_PIECE = 256 * 1024


def write_all(dst: BinaryIO, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = dst.write(view[:WRITE_PIECE])
        if written is None:
            raise OSError("the output would block")
        view = view[written:]


# transform(block, final, out) writes the transformed block into out, returning its length.
Transform: TypeAlias = Callable[[memoryview, bool, bytearray], int]


@contextmanager
def _mapped(src: BinaryIO, offset: int) -> Iterator[mmap.mmap | None]:
    """Map a regular, non-empty source file read-only, or yield None to read it instead.

    Sealing straight from the page cache saves one copy of every byte. The source must
    not shrink meanwhile (a truncated mapping raises SIGBUS); clips and downloaded files
    are complete before they are sealed or opened.
    """
    try:
        info = os.fstat(src.fileno())
    except (OSError, AttributeError, io.UnsupportedOperation):
        yield None
        return
    if not stat.S_ISREG(info.st_mode) or info.st_size <= offset:
        yield None
        return
    mapping = mmap.mmap(src.fileno(), info.st_size, access=mmap.ACCESS_READ)
    try:
        mapping.madvise(mmap.MADV_SEQUENTIAL)
        yield mapping
    finally:
        # After an error, views into the mapping may live on in the traceback; the
        # mapping is then closed when they are collected.
        with suppress(BufferError):
            mapping.close()


def _mapped_blocks(
    mapping: mmap.mmap, offset: int, block_size: int
) -> Generator[tuple[memoryview, bool], None, None]:
    """Blocks of a mapping from offset; pages already used are dropped from our RSS."""
    view = memoryview(mapping)
    try:
        end = len(mapping)
        position = offset
        released = 0
        while True:
            block = view[position : position + block_size]
            final = position + block_size >= end
            yield block, final
            block.release()
            position += block_size
            # Unmapping used pages keeps RSS flat; the page cache keeps them anyway.
            drop = position // mmap.PAGESIZE * mmap.PAGESIZE
            if drop - released >= 8 * block_size or final:
                mapping.madvise(mmap.MADV_DONTNEED, released, min(drop, end) - released)
                released = drop
            if final:
                return
    finally:
        view.release()


def _write_blocks(
    dst: BinaryIO,
    to_write: _Pipe,
    free_out: _Pipe,
    errors: list[BaseException],
    cancelled: threading.Event,
) -> None:
    """The writer thread: write each sealed (opened) block in order, then return its buffer to
    the pool; the first failure is recorded and cancels the other stages."""
    try:
        while True:
            item = to_write.get()
            if item is None:
                return
            buffer, size = cast(tuple[bytearray, int], item)
            write_all(dst, memoryview(buffer)[:size])
            free_out.put(buffer)
    except _Cancelled:
        pass
    except BaseException as error:
        errors.append(error)
        cancelled.set()


def run_pipeline(
    src: BinaryIO,
    dst: BinaryIO,
    block_size: int,
    out_size: int,
    transform: Transform,
    progress: Progress | None,
    offset: int = 0,
) -> None:
    """Read blocks, transform them in order on this thread, write them: three stages.

    A regular source file is mapped instead of read, so the reading stage vanishes.
    Buffers circulate through fixed pools instead of being allocated per block: a fresh
    1 MiB buffer costs 256 page faults, which measured as more system time than the
    whole copy.
    """
    with _mapped(src, offset) as mapping:
        if mapping is not None:
            _pipeline_mapped(mapping, offset, dst, block_size, out_size, transform, progress)
            return
    src.seek(offset)
    cancelled = threading.Event()
    to_transform = _Pipe(cancelled)
    to_write = _Pipe(cancelled)
    free_in = _Pipe(cancelled, _POOL)
    free_out = _Pipe(cancelled, _POOL)
    for _ in range(_POOL):
        free_in.put(bytearray(block_size))
        free_out.put(bytearray(out_size))
    errors: list[BaseException] = []

    def read_blocks() -> None:
        try:
            current = cast(bytearray, free_in.get())
            size = _readinto_full(src, current)
            while True:
                if size < block_size:
                    to_transform.put((current, size, True))
                    return
                following = cast(bytearray, free_in.get())
                following_size = _readinto_full(src, following)
                # A full block is final only if nothing follows it.
                to_transform.put((current, size, following_size == 0))
                if following_size == 0:
                    return
                current, size = following, following_size
        except _Cancelled:
            pass
        except BaseException as error:
            errors.append(error)
            cancelled.set()

    reader = threading.Thread(target=read_blocks, name="age-read", daemon=True)
    writer = threading.Thread(
        target=_write_blocks,
        args=(dst, to_write, free_out, errors, cancelled),
        name="age-write",
        daemon=True,
    )
    reader.start()
    writer.start()
    done = 0
    try:
        while True:
            block, size, final = cast(tuple[bytearray, int, bool], to_transform.get())
            out = cast(bytearray, free_out.get())
            written = transform(memoryview(block)[:size], final, out)
            free_in.put(block)
            to_write.put((out, written))
            done += size
            if progress is not None:
                progress(done)
            if final:
                break
        to_write.put(None)
        writer.join()
    except _Cancelled:
        pass
    except BaseException:
        cancelled.set()
        raise
    finally:
        if writer.is_alive():
            cancelled.set()
        reader.join()
        writer.join()
    if errors:
        raise errors[0]


def _pipeline_mapped(
    mapping: mmap.mmap,
    offset: int,
    dst: BinaryIO,
    block_size: int,
    out_size: int,
    transform: Transform,
    progress: Progress | None,
) -> None:
    cancelled = threading.Event()
    to_write = _Pipe(cancelled)
    free_out = _Pipe(cancelled, _POOL)
    for _ in range(_POOL):
        free_out.put(bytearray(out_size))
    errors: list[BaseException] = []

    writer = threading.Thread(
        target=_write_blocks,
        args=(dst, to_write, free_out, errors, cancelled),
        name="age-write",
        daemon=True,
    )
    writer.start()
    done = 0
    blocks = _mapped_blocks(mapping, offset, block_size)
    try:
        for block, final in blocks:
            out = cast(bytearray, free_out.get())
            written = transform(block, final, out)
            to_write.put((out, written))
            done += len(block)
            if progress is not None:
                progress(done)
        to_write.put(None)
        writer.join()
    except _Cancelled:
        pass
    except BaseException:
        cancelled.set()
        raise
    finally:
        blocks.close()
        if writer.is_alive():
            cancelled.set()
        writer.join()
    if errors:
        raise errors[0]


def sealer(key: bytes, first_index: int = 0) -> Transform:
    """Seal blocks of whole chunks in order, starting at chunk first_index."""
    aead = ChaCha20Poly1305(key)
    index = first_index

    def seal(block: memoryview, final: bool, out: bytearray) -> int:
        nonlocal index
        count = -(-len(block) // CHUNK_SIZE)
        if final and count == 0:
            count = 1  # an empty file is one empty final chunk
        view = memoryview(out)
        for j in range(count):
            chunk = block[j * CHUNK_SIZE : (j + 1) * CHUNK_SIZE]
            start = j * ENCRYPTED_CHUNK_SIZE
            last = final and j == count - 1
            aead.encrypt_into(
                chunk_nonce(index, last), chunk, None, view[start : start + len(chunk) + TAG_SIZE]
            )
            index += 1
        return len(block) + count * TAG_SIZE

    return seal


def opener(key: bytes, first_index: int = 0) -> Transform:
    """Open blocks of whole chunks in order, starting at chunk first_index."""
    aead = ChaCha20Poly1305(key)
    index = first_index

    def open_block(block: memoryview, final: bool, out: bytearray) -> int:
        nonlocal index
        count = -(-len(block) // ENCRYPTED_CHUNK_SIZE)
        if count == 0:
            raise AuthenticationError("the payload is empty: the file was truncated")
        last_size = len(block) - (count - 1) * ENCRYPTED_CHUNK_SIZE
        if final and last_size < TAG_SIZE:
            raise AuthenticationError("the final chunk is cut short: the file was truncated")
        view = memoryview(out)
        for j in range(count):
            chunk = block[j * ENCRYPTED_CHUNK_SIZE : (j + 1) * ENCRYPTED_CHUNK_SIZE]
            start = j * CHUNK_SIZE
            last = final and j == count - 1
            if last and len(chunk) == TAG_SIZE and index > 0:
                raise AuthenticationError("the final chunk is empty, which age forbids")
            try:
                aead.decrypt_into(
                    chunk_nonce(index, last),
                    chunk,
                    None,
                    view[start : start + len(chunk) - TAG_SIZE],
                )
            except InvalidTag:
                state = "final " if last else ""
                raise AuthenticationError(
                    f"payload {state}chunk {index} does not authenticate: the file is "
                    "corrupted or truncated"
                ) from None
            index += 1
        return len(block) - count * TAG_SIZE

    return open_block
