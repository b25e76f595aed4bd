"""The multi-process payload path of `encrypt_file` / `decrypt_file` (porchlight.age.parallel).

It must write exactly the bytes the one-process pipeline writes for the same file key and
nonce, reject a damaged or truncated file with the pipeline's error and message, and leave
no output (and no worker process) behind when anything fails, a worker's death included.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from porchlight.age import (
    CHUNK_SIZE,
    AgeError,
    AuthenticationError,
    X25519Identity,
    decrypt_file,
    encrypt_file,
    parse_header,
)
from porchlight.age.files import atomic_output
from porchlight.age.parallel import (
    PARALLEL_FROM,
    _pwrite_all,
    _run,
    preallocate,
    seal_layout,
    task_chunks,
    worker_count,
)
from porchlight.age.pipeline import BLOCK_CHUNKS, WRITE_PIECE, Transform, sealer
from porchlight.age.stream import ENCRYPTED_CHUNK_SIZE

WORKERS = 3
# An odd size (a short final chunk) and a whole number of chunks (a full final chunk).
MIB = 1024 * 1024
SIZES = [12 * MIB + 3 * CHUNK_SIZE + 1234, 16 * MIB]


def fixed_random(seed: int) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def payload_of(path: Path) -> bytes:
    """Everything after the header: the nonce and the chunks."""
    with open(path, "rb") as handle:
        parse_header(handle)
        return handle.read()


def no_children_left() -> bool:
    try:
        os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


@pytest.fixture()
def plain_file(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    size = getattr(request, "param", SIZES[0])
    path = tmp_path / "clip.mp4"
    path.write_bytes(random.Random(size).randbytes(size))
    return path


@pytest.fixture()
def sealed_file(tmp_path: Path, plain_file: Path, x25519_identity: X25519Identity) -> Path:
    sealed = tmp_path / "clip.mp4.age"
    encrypt_file(plain_file, sealed, [x25519_identity.recipient()], workers=WORKERS)
    return sealed


def test_large_files_fan_out_and_small_ones_do_not() -> None:
    # These tests are only meaningful if the parallel path is taken (single-threaded).
    assert worker_count(SIZES[0], WORKERS) == WORKERS
    assert worker_count(PARALLEL_FROM - 1, WORKERS) == 1
    assert worker_count(1 << 30, 1) == 1


@pytest.mark.parametrize("chunks", [1, 196, 256, 16384, 1 << 20, (1 << 24) + 5])
@pytest.mark.parametrize("workers", [2, 3, 8])
def test_tasks_are_whole_blocks_several_per_worker_and_few_enough_for_a_pipe(
    chunks: int, workers: int
) -> None:
    size = task_chunks(chunks, workers)
    assert size % BLOCK_CHUNKS == 0
    tasks = -(-chunks // size)
    # The task list is written whole before the workers start: it must fit in the pipe.
    assert tasks * 4 <= 16 * 1024
    # Enough tasks that a worker slowed down by the scheduler is not left holding half.
    assert tasks >= min(2 * workers, chunks // BLOCK_CHUNKS)
    assert size <= 8 * BLOCK_CHUNKS or tasks > 4000


def test_preallocate_gives_the_final_size_and_zeros(tmp_path: Path) -> None:
    path = tmp_path / "out"
    with open(path, "wb") as handle:
        preallocate(handle.fileno(), 3 * MIB + 5)
    assert path.stat().st_size == 3 * MIB + 5
    assert path.read_bytes() == bytes(3 * MIB + 5)


@pytest.mark.parametrize("offset", [0, 187, WRITE_PIECE - 1, 3 * WRITE_PIECE + 4096])
def test_writes_are_cut_at_multiples_of_the_piece(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offset: int
) -> None:
    data = random.Random(offset).randbytes(BLOCK_CHUNKS * ENCRYPTED_CHUNK_SIZE)
    calls: list[tuple[int, int]] = []
    real_pwrite = os.pwrite

    def pwrite(fd: int, piece: memoryview, at: int) -> int:
        # Take at most 100,000 bytes a call, as a kernel may: the rest must follow.
        written = real_pwrite(fd, piece[:100_000], at)
        calls.append((at, written))
        return written

    monkeypatch.setattr(os, "pwrite", pwrite)
    path = tmp_path / "out"
    with open(path, "wb") as handle:
        _pwrite_all(handle.fileno(), memoryview(data), offset)
    assert path.read_bytes()[offset:] == data
    assert [at for at, _ in calls] == [
        offset + sum(n for _, n in calls[:i]) for i in range(len(calls))
    ]
    for at, written in calls:
        # No piece crosses a multiple of WRITE_PIECE.
        assert at // WRITE_PIECE == (at + written - 1) // WRITE_PIECE


@pytest.mark.parametrize("plain_file", SIZES, indirect=True)
def test_parallel_output_is_byte_identical_to_the_pipeline(
    tmp_path: Path, plain_file: Path, x25519_identity: X25519Identity
) -> None:
    recipients = [x25519_identity.recipient()]
    one = tmp_path / "one.age"
    many = tmp_path / "many.age"
    encrypt_file(plain_file, one, recipients, workers=1, randbytes=fixed_random(5))
    encrypt_file(plain_file, many, recipients, workers=WORKERS, randbytes=fixed_random(5))
    payload = payload_of(one)
    chunks = -(-plain_file.stat().st_size // CHUNK_SIZE)
    assert len(payload) == 16 + plain_file.stat().st_size + 16 * chunks
    assert payload_of(many) == payload
    for workers in (1, WORKERS):
        back = tmp_path / f"back-{workers}"
        decrypt_file(many, back, [x25519_identity], workers=workers)
        assert back.read_bytes() == plain_file.read_bytes()


def test_parallel_decrypt_reads_debian_age(
    tmp_path: Path, plain_file: Path, x25519_identity: X25519Identity, age_binary: str
) -> None:
    theirs = tmp_path / "by-age.age"
    subprocess.run(
        [age_binary, "-r", str(x25519_identity.recipient()), "-o", str(theirs), str(plain_file)],
        check=True,
    )
    seen: list[int] = []
    decrypt_file(
        theirs, tmp_path / "back", [x25519_identity], workers=WORKERS, progress=seen.append
    )
    assert (tmp_path / "back").read_bytes() == plain_file.read_bytes()
    assert seen == sorted(seen) and seen[-1] == theirs.stat().st_size - payload_start(theirs)


def payload_start(path: Path) -> int:
    with open(path, "rb") as handle:
        parse_header(handle)
        return handle.tell() + 16


def damage(path: Path, offset: int) -> None:
    with open(path, "r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0x40]))


def errors_of(
    path: Path, tmp_path: Path, identity: X25519Identity
) -> dict[int, AuthenticationError]:
    """The error each path raises for path, checking each leaves nothing behind."""
    before = sorted(p.name for p in tmp_path.iterdir())
    found: dict[int, AuthenticationError] = {}
    for workers in (1, WORKERS):
        with pytest.raises(AuthenticationError) as caught:
            decrypt_file(path, tmp_path / "out", [identity], workers=workers)
        found[workers] = caught.value
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert no_children_left()
    return found


@pytest.mark.parametrize("where", ["middle", "last"])
def test_tampered_chunk_is_rejected_with_no_output(
    tmp_path: Path, sealed_file: Path, x25519_identity: X25519Identity, where: str
) -> None:
    start = payload_start(sealed_file)
    chunks = -(-(sealed_file.stat().st_size - start) // ENCRYPTED_CHUNK_SIZE)
    index = chunks // 2 if where == "middle" else chunks - 1
    damage(sealed_file, start + index * ENCRYPTED_CHUNK_SIZE + 100)
    found = errors_of(sealed_file, tmp_path, x25519_identity)
    final = "final " if where == "last" else ""
    assert str(found[WORKERS]) == str(found[1])
    assert str(found[WORKERS]).startswith(f"payload {final}chunk {index} does not authenticate")


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        (ENCRYPTED_CHUNK_SIZE, "payload final chunk"),  # ends on a chunk boundary
        (3, "the final chunk is cut short"),  # fewer bytes than a tag
    ],
)
def test_truncated_file_is_rejected_with_no_output(
    tmp_path: Path, sealed_file: Path, x25519_identity: X25519Identity, cut: int, message: str
) -> None:
    start = payload_start(sealed_file)
    length = sealed_file.stat().st_size - start
    whole_chunks = length - length % ENCRYPTED_CHUNK_SIZE
    keep = whole_chunks - cut if cut == ENCRYPTED_CHUNK_SIZE else whole_chunks + cut
    os.truncate(sealed_file, start + keep)
    found = errors_of(sealed_file, tmp_path, x25519_identity)
    assert str(found[WORKERS]) == str(found[1])
    assert str(found[WORKERS]).startswith(message)


def crashing(kill_at: int, how: str) -> Callable[[int], Transform]:
    """A sealer whose worker dies (or fails) on reaching chunk kill_at."""

    def make(first: int) -> Transform:
        seal = sealer(b"k" * 32, first)
        index = first

        def transform(block: memoryview, final: bool, out: bytearray) -> int:
            nonlocal index
            if index <= kill_at < index + 16:
                if how == "signal":
                    os.kill(os.getpid(), signal.SIGKILL)
                raise ValueError("boom")
            index += 16
            return seal(block, final, out)

        return transform

    return make


@pytest.mark.parametrize("how", ["signal", "exception"])
def test_worker_death_aborts_everything_and_leaves_no_output(
    tmp_path: Path, plain_file: Path, how: str
) -> None:
    size = plain_file.stat().st_size
    layout = seal_layout(size, 0)
    target = tmp_path / "out.age"
    with (
        open(plain_file, "rb") as src,
        pytest.raises(AgeError) as caught,
        atomic_output(target) as dst,
    ):
        os.ftruncate(dst.fileno(), layout.dst_end)
        # The middle worker's range: the others must be stopped, not waited for.
        _run(src.fileno(), dst.fileno(), layout, crashing(layout.chunks // 2, how), 3, None)
    expected = "killed by signal 9" if how == "signal" else "ValueError: boom"
    assert expected in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    assert no_children_left()


def test_interrupt_in_the_parent_stops_the_workers(
    tmp_path: Path, plain_file: Path, x25519_identity: X25519Identity
) -> None:
    def interrupt(done: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        encrypt_file(
            plain_file,
            tmp_path / "out.age",
            [x25519_identity.recipient()],
            workers=WORKERS,
            progress=interrupt,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    assert no_children_left()
