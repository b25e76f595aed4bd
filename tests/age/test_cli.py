"""`porchlight keygen | encrypt | decrypt | rewrap`, run as a user would, in a subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from porchlight.age import CHUNK_SIZE, generate_identity, parse_header

# `python -m porchlight.cli` would load porchlight.cli twice (as __main__ too), so its
# CommandError would not be the one the age commands raise; run main() as the console
# script does.
ENTRY = [sys.executable, "-c", "import sys; from porchlight.cli import main; sys.exit(main())"]


def porchlight(
    *args: str | Path, stdin: bytes = b"", cwd: Path | None = None, ok: bool = True
) -> subprocess.CompletedProcess[bytes]:
    done = subprocess.run(
        [*ENTRY, *map(str, args)], input=stdin, capture_output=True, cwd=cwd, timeout=120
    )
    if ok:
        assert done.returncode == 0, done.stderr.decode()
    else:
        assert done.returncode != 0
        assert done.stderr.startswith(b"porchlight: error: "), done.stderr
        assert b"Traceback" not in done.stderr
    return done


def open_in(pid: int, directory: Path) -> list[str]:
    """The names of the files process pid has open in directory, as /proc shows them:
    `#<inode> (deleted)` for a file that has no name (O_TMPFILE)."""
    found = []
    try:
        descriptors = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    for descriptor in descriptors:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{descriptor}")
        except OSError:
            continue  # closed meanwhile
        if os.path.dirname(link) == str(directory):
            found.append(os.path.basename(link))
    return found


@pytest.fixture()
def keys(tmp_path: Path) -> dict[str, Path | str]:
    pq = tmp_path / "pq.key"
    classic = tmp_path / "classic.key"
    done = porchlight("keygen", "-o", pq)
    assert done.stderr.startswith(b"Public key: age1pq1")
    porchlight("keygen", "--x25519", "-o", classic)
    return {
        "pq": pq,
        "classic": classic,
        "pq_recipient": porchlight("keygen", "-y", pq).stdout.decode().strip(),
        "classic_recipient": porchlight("keygen", "-y", classic).stdout.decode().strip(),
    }


def test_keygen_defaults_to_post_quantum_and_refuses_to_overwrite(tmp_path: Path) -> None:
    done = porchlight("keygen")
    lines = done.stdout.decode().splitlines()
    assert lines[0].startswith("# created: ")
    assert lines[-1].startswith("AGE-SECRET-KEY-PQ-1")
    key = tmp_path / "k"
    porchlight("keygen", "--x25519", "-o", key)
    assert (key.stat().st_mode & 0o777) == 0o600
    assert "AGE-SECRET-KEY-1" in key.read_text()
    refused = porchlight("keygen", "-o", key, ok=False)
    assert b"already exists" in refused.stderr


def test_stdin_to_stdout_round_trip(keys: dict[str, Path | str]) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 5)
    sealed = porchlight("encrypt", "-r", keys["pq_recipient"], stdin=data).stdout
    assert sealed.startswith(b"age-encryption.org/v1\n-> mlkem768x25519 ")
    assert porchlight("decrypt", "-i", keys["pq"], stdin=sealed).stdout == data


def test_files_recipients_file_and_armor(tmp_path: Path, keys: dict[str, Path | str]) -> None:
    plain = tmp_path / "clip.mp4"
    plain.write_bytes(os.urandom(CHUNK_SIZE * 3))
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# the homeowner\n{keys['classic_recipient']}\n\n")
    out = tmp_path / "clip.age"
    porchlight("encrypt", "-R", recipients, "-a", "-o", out, plain)
    assert out.read_bytes().startswith(b"-----BEGIN AGE ENCRYPTED FILE-----\n")
    back = tmp_path / "back.mp4"
    porchlight("decrypt", "-i", keys["classic"], "-o", back, out)
    assert back.read_bytes() == plain.read_bytes()


def test_passphrase_file_both_ways(tmp_path: Path) -> None:
    secret = tmp_path / "pass.txt"
    secret.write_text("a long passphrase\n")
    sealed = porchlight("encrypt", "-p", "--passphrase-file", secret, stdin=b"hi").stdout
    assert b"-> scrypt " in sealed
    assert porchlight("decrypt", "--passphrase-file", secret, stdin=sealed).stdout == b"hi"
    secret.write_text("another\n")
    failed = porchlight("decrypt", "--passphrase-file", secret, stdin=sealed, ok=False)
    assert b"passphrase is wrong" in failed.stderr


def test_protected_identity_file(tmp_path: Path) -> None:
    secret = tmp_path / "pass.txt"
    secret.write_text("porch\n")
    key = tmp_path / "home.key"
    porchlight("keygen", "-o", key, "--passphrase-file", secret)
    assert key.read_bytes().startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    recipient = porchlight("keygen", "-y", key, "--passphrase-file", secret).stdout.strip()
    sealed = porchlight("encrypt", "-r", recipient.decode(), stdin=b"clip").stdout
    assert porchlight("decrypt", "-i", key, "--passphrase-file", secret, stdin=sealed).stdout == (
        b"clip"
    )
    # Without a passphrase and without a terminal, a clear error instead of a hang.
    failed = subprocess.run(
        [*ENTRY, "decrypt", "-i", str(key)],
        input=sealed,
        capture_output=True,
        start_new_session=True,
        timeout=60,
    )
    assert failed.returncode != 0
    assert b"no terminal" in failed.stderr


def test_errors_are_one_line_and_leave_no_output(
    tmp_path: Path, keys: dict[str, Path | str]
) -> None:
    plain = tmp_path / "clip.mp4"
    plain.write_bytes(os.urandom(CHUNK_SIZE * 20))
    sealed = tmp_path / "clip.age"
    porchlight("encrypt", "-r", keys["pq_recipient"], "-o", sealed, plain)
    before = sorted(p.name for p in tmp_path.iterdir())

    wrong = porchlight("decrypt", "-i", keys["classic"], "-o", tmp_path / "out", sealed, ok=False)
    assert b"none of the given identities opens this file" in wrong.stderr
    assert b"porchlight: hint:" in wrong.stderr

    damaged = bytearray(sealed.read_bytes())
    damaged[-30] ^= 4
    sealed.write_bytes(bytes(damaged))
    bad = porchlight("decrypt", "-i", keys["pq"], "-o", tmp_path / "out", sealed, ok=False)
    assert b"does not authenticate" in bad.stderr
    # Through the streaming path (stdin) to a file, too.
    porchlight("decrypt", "-i", keys["pq"], "-o", tmp_path / "out", stdin=bytes(damaged), ok=False)

    notage = porchlight("decrypt", "-i", keys["pq"], stdin=b"hello world\n", ok=False)
    assert b"not an age file" in notage.stderr
    badkey = porchlight("encrypt", "-r", "age1notakey", stdin=b"x", ok=False)
    assert b"invalid recipient" in badkey.stderr
    missing = porchlight("decrypt", "-i", tmp_path / "nokey", sealed, ok=False)
    assert b"cannot read identity file" in missing.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_rewrap_command(tmp_path: Path, keys: dict[str, Path | str]) -> None:
    plain = tmp_path / "clip.mp4"
    plain.write_bytes(os.urandom(CHUNK_SIZE + 1))
    sealed = tmp_path / "clip.age"
    porchlight("encrypt", "-r", keys["pq_recipient"], "-o", sealed, plain)
    agency = tmp_path / "agency.key"
    porchlight("keygen", "-o", agency)
    agency_recipient = porchlight("keygen", "-y", agency).stdout.decode().strip()
    shared = tmp_path / "shared.age"
    porchlight("rewrap", "-i", keys["pq"], "-r", agency_recipient, "-o", shared, sealed)
    original, rewrapped = sealed.read_bytes(), shared.read_bytes()
    with sealed.open("rb") as a, shared.open("rb") as b:
        assert (
            original[parse_header(a).payload_offset :]
            == rewrapped[parse_header(b).payload_offset :]
        )
    assert porchlight("decrypt", "-i", agency, shared).stdout == plain.read_bytes()
    porchlight("decrypt", "-i", keys["pq"], shared, ok=False)


def _limited(limit: int) -> None:
    """preexec_fn: a file-size limit, with SIGXFSZ ignored so write() fails with EFBIG."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("to_stdout", [False, True])
def test_a_full_output_fails_instead_of_truncating(
    tmp_path: Path, keys: dict[str, Path | str], to_stdout: bool
) -> None:
    data = os.urandom(300_000)
    sealed = porchlight("encrypt", "-r", keys["classic_recipient"], stdin=data).stdout
    out = tmp_path / "out.bin"
    if to_stdout:
        with out.open("wb") as sink:
            done = subprocess.run(
                [*ENTRY, "decrypt", "-i", str(keys["classic"])],
                input=sealed,
                stdout=sink,
                stderr=subprocess.PIPE,
                preexec_fn=lambda: _limited(100 * 1024),
                timeout=120,
            )
    else:
        done = subprocess.run(
            [*ENTRY, "decrypt", "-i", str(keys["classic"]), "-o", str(out)],
            input=sealed,
            capture_output=True,
            preexec_fn=lambda: _limited(100 * 1024),
            timeout=120,
        )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.decode().splitlines()
    assert lines[0].startswith("porchlight: error: cannot write"), lines
    assert "File too large" in lines[0]
    if to_stdout:
        assert "incomplete" in done.stderr.decode()
    else:
        assert not out.exists()
        assert list(tmp_path.glob("*.partial")) == []


def test_output_writes_through_symlinks_devices_and_fifos(
    tmp_path: Path, keys: dict[str, Path | str]
) -> None:
    data = os.urandom(CHUNK_SIZE + 7)
    plain = tmp_path / "plain"
    plain.write_bytes(data)
    sealed = tmp_path / "sealed.age"
    porchlight("encrypt", "-r", keys["classic_recipient"], "-o", sealed, plain)
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link"
    link.symlink_to(real.name)
    porchlight("decrypt", "-i", keys["classic"], "-o", link, sealed)
    assert link.is_symlink() and real.read_bytes() == data
    to_null = tmp_path / "null"
    to_null.symlink_to("/dev/null")
    porchlight("decrypt", "-i", keys["classic"], "-o", to_null, sealed)
    assert to_null.is_symlink() and os.readlink(to_null) == "/dev/null"
    assert Path("/dev/null").is_char_device()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    porchlight("decrypt", "-i", keys["classic"], "-o", fifo, sealed)
    received, _ = reader.communicate(timeout=60)
    assert received == data
    assert fifo.is_fifo()
    assert list(tmp_path.glob("*.partial")) == []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("command", ["encrypt", "decrypt"])
def test_termination_mid_stream_leaves_no_partial_file(
    tmp_path: Path, keys: dict[str, Path | str], command: str, signum: int
) -> None:
    data = os.urandom(4 * CHUNK_SIZE)
    if command == "encrypt":
        args = ["encrypt", "-r", str(keys["classic_recipient"])]
        feed = data
    else:
        args = ["decrypt", "-i", str(keys["classic"])]
        feed = porchlight("encrypt", "-r", keys["classic_recipient"], stdin=data).stdout
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    process = subprocess.Popen(
        [*ENTRY, *args, "-o", str(out_dir / "result")],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None and process.stderr is not None
    # Feed the first part, wait until the output is open (unnamed: O_TMPFILE), then stop it
    # mid-stream.
    process.stdin.write(feed[: 2 * CHUNK_SIZE])
    process.stdin.flush()
    deadline = time.monotonic() + 60
    while not open_in(process.pid, out_dir):
        assert time.monotonic() < deadline, "the output was never opened"
        time.sleep(0.02)
    time.sleep(0.2)
    process.send_signal(signum)
    assert process.wait(timeout=60) == 130
    assert b"porchlight: interrupted" in process.stderr.read()
    process.stdin.close()
    process.stderr.close()
    assert list(out_dir.iterdir()) == []


def test_keygen_into_a_closed_pipe_stops_quietly(tmp_path: Path) -> None:
    key = tmp_path / "k"
    porchlight("keygen", "--x25519", "-o", key)
    for args in (["keygen", "-y", str(key)], ["keygen"]):
        process = subprocess.Popen([*ENTRY, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert process.stdout is not None and process.stderr is not None
        process.stdout.close()  # like `| head -0`: the reader is gone before anything is written
        err = process.stderr.read()
        process.stderr.close()
        assert process.wait(timeout=60) == 1
        assert b"Traceback" not in err and b"BrokenPipe" not in err


def test_passphrase_file_that_is_not_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "pp"
    bad.write_bytes(b"\xff\xfe\n")
    done = porchlight("encrypt", "--passphrase-file", bad, stdin=b"x", ok=False)
    assert done.stderr == b"porchlight: error: the passphrase file is not UTF-8 text\n"


def test_tampered_file_to_stdout_says_the_output_is_incomplete(
    tmp_path: Path, keys: dict[str, Path | str]
) -> None:
    sealed = bytearray(
        porchlight(
            "encrypt", "-r", keys["classic_recipient"], stdin=os.urandom(3 * CHUNK_SIZE)
        ).stdout
    )
    sealed[-5] ^= 1  # the last chunk fails; the first ones were already written out
    done = porchlight("decrypt", "-i", keys["classic"], stdin=bytes(sealed), ok=False)
    assert b"no output was kept" not in done.stderr
    assert b"incomplete and unauthenticated" in done.stderr
    out = tmp_path / "out.bin"
    done = porchlight("decrypt", "-i", keys["classic"], "-o", out, stdin=bytes(sealed), ok=False)
    assert b"no output was kept" in done.stderr and not out.exists()


def test_keygen_never_replaces_a_name_even_a_dangling_symlink(tmp_path: Path) -> None:
    dangling = tmp_path / "key"
    dangling.symlink_to("nowhere")
    refused = porchlight("keygen", "-o", dangling, ok=False)
    assert b"already exists" in refused.stderr
    assert dangling.is_symlink() and not (tmp_path / "nowhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


def test_keygen_lost_race_keeps_the_existing_key(tmp_path: Path) -> None:
    from porchlight.age.files import write_identity_file

    key = tmp_path / "key"
    key.write_text("the other key\n")
    with pytest.raises(FileExistsError):
        write_identity_file(key, generate_identity("x25519"), None, overwrite=False)
    assert key.read_text() == "the other key\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key"]


def test_keygen_warns_when_stdout_is_a_file_others_can_read(tmp_path: Path) -> None:
    for mode, warned in ((0o644, True), (0o600, False)):
        out = tmp_path / f"key{mode:o}"
        out.touch(mode)
        out.chmod(mode)
        with out.open("wb") as sink:
            done = subprocess.run([*ENTRY, "keygen"], stdout=sink, stderr=subprocess.PIPE)
        assert done.returncode == 0
        assert (b"warning: writing the secret key to a file others can read" in done.stderr) is (
            warned
        )
        assert "AGE-SECRET-KEY-PQ-1" in out.read_text()
