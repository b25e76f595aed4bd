"""Interoperability with Debian's age (1.1.1) in both directions.

X25519, scrypt (age reads passphrases only from a terminal, so it runs under a pty),
ASCII armor, several recipients, and a 1 GiB stream each way through pipes with our side
in its own process, whose peak RSS shows memory stays flat.
"""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from porchlight.age import (
    CHUNK_SIZE,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    decrypt_file,
    encrypt_file,
    generate_identity,
)


def age_with_tty(argv: list[str], passphrase: bytes, timeout: float = 60) -> tuple[int, bytes]:
    """Run age on a pseudo-terminal, answering each passphrase prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - child
        os.execvp(argv[0], argv)  # noqa: S606
    output = b""
    answered = 0
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.kill(pid, signal.SIGKILL)
                raise AssertionError(f"age did not finish: {output!r}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            try:
                data = os.read(fd, 1024)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            output += data
            while answered < output.lower().count(b"passphrase"):
                os.write(fd, passphrase + b"\n")
                answered += 1
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), output


@pytest.fixture()
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "clip.mp4"
    path.write_bytes(os.urandom(3 * CHUNK_SIZE + 1234))
    return path


def key_file(tmp_path: Path, identity: X25519Identity, name: str = "key.txt") -> Path:
    path = tmp_path / name
    path.write_text(f"{identity}\n")
    return path


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armor"])
def test_x25519_age_reads_ours(
    tmp_path: Path, plain: Path, age_binary: str, armor: bool, x25519_identity: X25519Identity
) -> None:
    sealed = tmp_path / "ours.age"
    encrypt_file(plain, sealed, [x25519_identity.recipient()], armor=armor)
    out = tmp_path / "out"
    subprocess.run(
        [age_binary, "-d", "-i", key_file(tmp_path, x25519_identity), "-o", out, sealed], check=True
    )
    assert out.read_bytes() == plain.read_bytes()


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armor"])
def test_x25519_we_read_age(
    tmp_path: Path, plain: Path, age_binary: str, armor: bool, x25519_identity: X25519Identity
) -> None:
    sealed = tmp_path / "theirs.age"
    flags = ["-a"] if armor else []
    subprocess.run(
        [age_binary, "-r", str(x25519_identity.recipient()), *flags, "-o", sealed, plain],
        check=True,
    )
    assert sealed.read_bytes().startswith(b"-----BEGIN") == armor
    out = tmp_path / "out"
    decrypt_file(sealed, out, [x25519_identity])
    assert out.read_bytes() == plain.read_bytes()


def test_several_recipients_both_ways(tmp_path: Path, plain: Path, age_binary: str) -> None:
    people = [generate_identity("x25519") for _ in range(3)]
    assert all(isinstance(p, X25519Identity) for p in people)
    ours = tmp_path / "ours.age"
    encrypt_file(plain, ours, [p.recipient() for p in people])
    theirs = tmp_path / "theirs.age"
    args = [a for p in people for a in ("-r", str(p.recipient()))]
    subprocess.run([age_binary, *args, "-o", theirs, plain], check=True)
    for n, person in enumerate(people):
        assert isinstance(person, X25519Identity)
        out = tmp_path / f"by-age-{n}"
        subprocess.run(
            [age_binary, "-d", "-i", key_file(tmp_path, person, f"k{n}"), "-o", out, ours],
            check=True,
        )
        assert out.read_bytes() == plain.read_bytes()
        decrypt_file(theirs, tmp_path / f"by-us-{n}", [person])
        assert (tmp_path / f"by-us-{n}").read_bytes() == plain.read_bytes()


def test_scrypt_both_ways(tmp_path: Path, plain: Path, age_binary: str) -> None:
    ours = tmp_path / "ours.age"
    encrypt_file(plain, ours, [ScryptRecipient("neighbourly", work_factor=12)])
    out = tmp_path / "by-age"
    code, output = age_with_tty([age_binary, "-d", "-o", str(out), str(ours)], b"neighbourly")
    assert code == 0, output
    assert out.read_bytes() == plain.read_bytes()

    theirs = tmp_path / "theirs.age"
    code, output = age_with_tty([age_binary, "-p", "-o", str(theirs), str(plain)], b"neighbourly")
    assert code == 0, output
    assert b"-> scrypt " in theirs.read_bytes()[:200]
    decrypt_file(theirs, tmp_path / "by-us", [ScryptIdentity("neighbourly")])
    assert (tmp_path / "by-us").read_bytes() == plain.read_bytes()


# Our side of the 1 GiB runs, in a fresh interpreter so its peak RSS is ours alone. Data is a
# ChaCha20 keystream made block by block, so no one ever holds the file in memory.
STREAM_SCRIPT = r"""
import hashlib, json, resource, subprocess, sys, threading
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from porchlight.age import decryptor, encryptor, parse_identity

direction, age, identity_text, key_path, total = sys.argv[1:6]
total = int(total)
identity = parse_identity(identity_text)
BLOCK = 1 << 20
zeros = bytes(BLOCK)
keystream = Cipher(algorithms.ChaCha20(bytes(32), bytes(16)), None).encryptor()
sent = hashlib.sha256()
got = hashlib.sha256()
rss_marks = []

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

def peak_rss_mib():
    # VmHWM belongs to this process's own address space; ru_maxrss would also count the
    # parent's memory at fork time, which exec carries over on Linux.
    with open("/proc/self/status") as f:
        line = next(l for l in f if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024

def generate(sink):
    for n in range(total // BLOCK):
        block = keystream.update(zeros)
        sent.update(block)
        sink.write(block)
        if n in (total // BLOCK // 8, total // BLOCK - 1):
            rss_marks.append(rss_mib())

def drain(source, hasher):
    while block := source.read(BLOCK):
        hasher.update(block)

if direction == "age-to-us":
    proc = subprocess.Popen([age, "-r", str(identity.recipient())],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    def feed():
        generate(proc.stdin)
        proc.stdin.close()
    feeder = threading.Thread(target=feed)
    feeder.start()
    drain(decryptor(proc.stdout, [identity]), got)
    feeder.join()
else:
    proc = subprocess.Popen([age, "-d", "-i", key_path],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    drainer = threading.Thread(target=drain, args=(proc.stdout, got))
    drainer.start()
    with encryptor(proc.stdin, [identity.recipient()]) as writer:
        generate(writer)
    proc.stdin.close()
    drainer.join()
code = proc.wait()
print(json.dumps({
    "age_exit": code,
    "sent": sent.hexdigest(),
    "got": got.hexdigest(),
    "peak_rss_mib": peak_rss_mib(),
    "rss_marks_mib": rss_marks,
}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["age-to-us", "us-to-age"])
def test_one_gibibyte_stream_with_flat_memory(
    tmp_path: Path, age_binary: str, direction: str, x25519_identity: X25519Identity
) -> None:
    total = 1 << 30
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            STREAM_SCRIPT,
            direction,
            age_binary,
            str(x25519_identity),
            str(key_file(tmp_path, x25519_identity)),
            str(total),
        ],
        capture_output=True,
        timeout=300,
        check=True,
    )
    report = json.loads(done.stdout)
    assert report["age_exit"] == 0
    assert report["sent"] == report["got"]
    assert report["peak_rss_mib"] < 64, report
    early, late = report["rss_marks_mib"]
    assert late - early < 8, report  # flat: no growth between 128 MiB and 1 GiB
