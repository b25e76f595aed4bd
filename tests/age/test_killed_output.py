"""kill -9 in the middle of writing an output leaves nothing behind, not even a hidden file.

SIGKILL runs no cleanup: the outputs used to be written to `.<name>.<hex>.partial` beside
the target, which a killed `porchlight decrypt -o` or `request download -i` left holding
part of the decrypted footage. They are now created with O_TMPFILE (`new_file` in
porchlight/files.py) and have no name until they are whole. Each test starts the command
in a subprocess, kills it as soon as it holds an output file in the target directory open,
and checks that the directory holds only what was there before.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from porchlight.age import X25519Identity
from porchlight.consent import new_ask_key, shared_manifest
from porchlight.manifest import ClipManifest, public_key_text
from tests.age.test_cli import ENTRY, open_in, porchlight
from tests.clients.test_shared_manifest import listed

pytestmark = pytest.mark.skipif(
    not os.path.isdir("/proc/self/fd"), reason="watching a process's files needs /proc"
)

SIZE = 64 * 1024 * 1024


@pytest.fixture()
def key(tmp_path: Path, x25519_identity: X25519Identity) -> Path:
    path = tmp_path / "agency.key"
    path.write_text(f"{x25519_identity}\n")
    return path


def _sealed(tmp_path: Path, identity: X25519Identity) -> tuple[Path, Path]:
    """64 MiB of random "footage", and the file `porchlight encrypt` makes of it."""
    plain = tmp_path / "footage.mp4"
    plain.write_bytes(os.urandom(SIZE))
    sealed = tmp_path / "footage.mp4.age"
    porchlight("encrypt", "-r", str(identity.recipient()), "-o", sealed, plain)
    return plain, sealed


def _kill_mid_write(
    argv: list[str],
    directory: Path,
    writing: Callable[[list[str]], bool],
    start_over: Callable[[], None],
) -> None:
    """Run argv, SIGKILL it once writing(what it has open in directory) says it is writing
    its output; if it finished first, start_over() deletes what it wrote and it runs again."""
    for _ in range(10):
        process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        caught = False
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if writing(open_in(process.pid, directory)):
                os.kill(process.pid, signal.SIGKILL)
                caught = True
                break
            time.sleep(0.002)
        if not caught and process.poll() is None:
            process.kill()  # stuck: fail below rather than hang
        process.wait(timeout=60)
        # Its forked workers, if any (the parallel path for 8 MiB or more), share its group.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        if caught:
            assert process.returncode == -signal.SIGKILL
            return
        assert process.returncode == 0
        start_over()
    pytest.fail("the command always finished before it could be killed")


@pytest.mark.parametrize("command", ["decrypt", "encrypt"])
def test_a_killed_decrypt_or_encrypt_leaves_nothing(
    tmp_path: Path, x25519_identity: X25519Identity, key: Path, command: str
) -> None:
    plain, sealed = _sealed(tmp_path, x25519_identity)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if command == "decrypt":
        source = sealed.rename(out_dir / sealed.name)
        output = out_dir / plain.name
        args = ["decrypt", "-i", str(key)]
    else:
        source = plain.rename(out_dir / plain.name)
        output = out_dir / sealed.name
        args = ["encrypt", "-r", str(x25519_identity.recipient())]
    _kill_mid_write(
        [*ENTRY, *args, "-o", str(output), str(source)],
        out_dir,
        lambda names: any(name != source.name for name in names),
        output.unlink,
    )
    assert sorted(p.name for p in out_dir.iterdir()) == [source.name]


DOWNLOAD = """
import json, sys
import httpx
from porchlight import request_cli
from porchlight.cli import main
from porchlight.client import PorchlightClient

item_path, clip_path, out_dir, key = sys.argv[1:]
with open(item_path) as handle:
    item = json.load(handle)
with open(clip_path, "rb") as handle:
    clip = handle.read()

def handler(request):
    if request.url.path.endswith("/shared"):
        return httpx.Response(200, json=[item])
    return httpx.Response(200, content=clip)

def make_client(server, token, *, allow_http=False):
    return PorchlightClient(server, token=token, transport=httpx.MockTransport(handler))

request_cli.make_client = make_client
sys.exit(main(["request", "download", "3", "-o", out_dir, "-i", key,
               "--server", "http://127.0.0.1:9", "--token", "t"]))
"""


def _shared_item(plain: Path, sealed: Path) -> dict[str, object]:
    """The shared-clip entry the server lists for sealed, with a manifest that matches it."""
    ask_key = new_ask_key()
    device_key = Ed25519PrivateKey.generate()
    ciphertext = sealed.read_bytes()
    original = ClipManifest(
        clip_id="20261122T101500Z-abc123",
        device_key=public_key_text(device_key.public_key()),
        start="2026-11-22T10:15:00.000Z",
        end="2026-11-22T10:15:30.200Z",
        plaintext_sha256=hashlib.sha256(plain.read_bytes()).hexdigest(),
        ciphertext_sha256=hashlib.sha256(ciphertext).hexdigest(),
        ciphertext_size=len(ciphertext),
    )
    signed = shared_manifest(
        original, hashlib.sha256(ciphertext).hexdigest(), len(ciphertext), ask_key
    )
    return listed(signed, ask_key)


def test_a_download_killed_while_decrypting_leaves_no_footage(
    tmp_path: Path, x25519_identity: X25519Identity, key: Path
) -> None:
    plain, sealed = _sealed(tmp_path, x25519_identity)
    item = tmp_path / "item.json"
    item.write_text(json.dumps(_shared_item(plain, sealed)))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    name = "Resident-A-20261122T101500Z-abc123"
    downloaded = [f"{name}.age", f"{name}.manifest.json"]

    def decrypting(names: list[str]) -> bool:
        # The ciphertext is in place (and open, being read): anything else is the footage.
        in_place = (out_dir / downloaded[1]).exists()
        return in_place and any(n not in downloaded for n in names)

    def start_over() -> None:
        for written in [*downloaded, f"{name}.mp4"]:
            (out_dir / written).unlink()

    argv = [sys.executable, "-c", DOWNLOAD, str(item), str(sealed), str(out_dir), str(key)]
    _kill_mid_write(argv, out_dir, decrypting, start_over)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(downloaded)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(word) for word in handle.read().split()]
    except OSError:
        return []


def _maps(pid: int, path: Path) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as handle:
            return str(path) in handle.read()
    except OSError:
        return False


def _alive(pid: int) -> bool:
    """Whether pid is a process that has not exited (a zombie has)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            state = handle.read().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(
    not os.path.exists(f"/proc/self/task/{os.getpid()}/children"),
    reason="finding a process's children needs /proc/PID/task/TID/children",
)
def test_payload_workers_die_with_a_killed_parent(
    tmp_path: Path, x25519_identity: X25519Identity, key: Path
) -> None:
    """SIGKILL of `porchlight decrypt` while its forked workers run: the workers are killed
    too, not left sealing into an output nobody can name. The workers are stopped first, so
    on their own they could neither finish nor exit: only the kernel's parent-death signal
    ends them."""
    _, sealed = _sealed(tmp_path, x25519_identity)
    output = tmp_path / "out.mp4"
    argv = [*ENTRY, "decrypt", "-i", str(key), "-o", str(output), str(sealed)]
    for _ in range(10):
        process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        try:
            # Workers that have mapped the input: past their set-up, so working.
            workers: list[int] = []
            while process.poll() is None and not workers:
                workers = [w for w in _children(process.pid) if _maps(w, sealed)]
            for worker in workers:
                with suppress(ProcessLookupError):
                    os.kill(worker, signal.SIGSTOP)
            stopped = [worker for worker in workers if _alive(worker)]
            if not stopped:  # they finished first: try again
                process.wait(timeout=60)
                output.unlink(missing_ok=True)
                continue
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
            deadline = time.monotonic() + 3
            while any(_alive(worker) for worker in stopped) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not [worker for worker in stopped if _alive(worker)], (
                "payload workers outlived their killed parent"
            )
            assert not output.exists()
            return
        finally:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
    pytest.fail("the workers always finished before they could be stopped")
