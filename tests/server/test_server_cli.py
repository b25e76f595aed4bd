"""`porchlight server run|migrate|create-admin|invite` as a person would type them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.server.live import REPO, free_port

PASSWORD = "amber-window-evening-31"
# The entry point as installed (`python -m porchlight.cli` would load the module twice).
PORCHLIGHT = [sys.executable, "-c", "import sys; from porchlight.cli import main; sys.exit(main())"]


def _env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORCHLIGHT_")}
    env.update(
        {
            "PORCHLIGHT_DATA_DIR": str(data_dir),
            "PORCHLIGHT_ARGON2_TIME_COST": "1",
            "PORCHLIGHT_ARGON2_MEMORY_KIB": "1024",
        }
    )
    return env


def _porchlight(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PORCHLIGHT, "server", *args],
        cwd=REPO,
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _server_run(tmp_path: Path, port: int, *options: str) -> subprocess.Popen[str]:
    """`porchlight server run` on `port`, its output (stdout and stderr) on a pipe."""
    return subprocess.Popen(
        [*PORCHLIGHT, "server", "run", "--port", str(port), *options],
        cwd=REPO,
        env=_env(tmp_path / "data"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _healthy(process: subprocess.Popen[Any], port: int, seconds: float = 60) -> httpx.Response:
    """`GET /healthz` once the server answers (fails if it exits or `seconds` pass first)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
        except httpx.TransportError:
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)


def test_run_migrates_serves_and_says_how_to_create_an_admin(tmp_path: Path) -> None:
    port = free_port()
    process = _server_run(tmp_path, port)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in first
        lines = [process.stdout.readline() for _ in range(2)]
        assert any("porchlight server create-admin" in line for line in lines)
        assert _healthy(process, port).json() == {"status": "ok"}
        docs = httpx.get(f"http://127.0.0.1:{port}/docs")
        assert docs.status_code == 200 and "swagger" in docs.text.lower()
        schema = httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()
        assert "/api/devices/enroll" in schema["paths"]
        assert (tmp_path / "data" / "porchlight.sqlite3").exists()
    finally:
        process.terminate()
        process.wait(timeout=10)
    # No access log by default: nothing records when whose camera or browser called.
    rest = process.stdout.read()
    assert "Application startup complete" in rest
    assert "GET /healthz" not in rest and "127.0.0.1:" not in rest.replace(f":{port}", "")


def test_run_with_access_log_records_each_request(tmp_path: Path) -> None:
    port = free_port()
    process = _server_run(tmp_path, port, "--workers", "1", "--access-log")
    try:
        assert _healthy(process, port).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert process.stdout is not None
    assert '"GET /healthz HTTP/1.1" 200' in process.stdout.read()


def test_admin_and_invite_commands(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _porchlight(data, "migrate").returncode == 0
    password_file = tmp_path / "pw"
    password_file.write_text(PASSWORD + "\n")
    made = _porchlight(
        data, "create-admin", "--username", "ada", "--password-file", str(password_file)
    )
    assert made.returncode == 0, made.stderr
    assert "admin 'ada' created" in made.stdout
    again = _porchlight(
        data, "create-admin", "--username", "ada", "--password-file", str(password_file)
    )
    assert again.returncode == 1
    assert again.stderr.startswith("porchlight: error: user name 'ada' is taken")
    assert "Traceback" not in again.stderr
    weak_file = tmp_path / "weak"
    weak_file.write_text("short\n")
    weak = _porchlight(data, "create-admin", "--username", "bob", "--password-file", str(weak_file))
    assert weak.returncode == 1 and "at least 12" in weak.stderr
    invite = _porchlight(data, "invite", "--role", "resident")
    assert invite.returncode == 0
    assert invite.stdout.strip().startswith("inv_")
    requester = _porchlight(data, "invite", "--role", "requester")
    assert requester.returncode == 1 and "agency" in requester.stderr
    bad_settings = subprocess.run(
        [*PORCHLIGHT, "server", "migrate"],
        cwd=REPO,
        env={**_env(data), "PORCHLIGHT_SESION_HOURS": "1", "PORCHLIGHT_SESSION_HOURS": "x"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_settings.returncode == 1
    assert "invalid server settings" in bad_settings.stderr


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(c) for c in (task / "children").read_text().split())
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_workers_stop_when_the_server_process_is_killed(tmp_path: Path) -> None:
    # `kill -9` of `server run` must not leave its workers serving the port unsupervised.
    port = free_port()
    process = _server_run(tmp_path, port, "--workers", "2")
    try:
        assert _healthy(process, port).status_code == 200
        workers = {
            pid
            for pid in _children(process.pid)
            if b"multiprocessing" in Path(f"/proc/{pid}/cmdline").read_bytes()
            and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
        }
        assert len(workers) == 2
        process.kill()
        process.wait(timeout=10)
        deadline = time.monotonic() + 20
        while any(_alive(pid) for pid in workers):
            assert time.monotonic() < deadline, "workers still running after the parent died"
            time.sleep(0.1)
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
            raise AssertionError("something still answers on the port")
        except httpx.TransportError:
            pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_serving_process_freezes_its_startup_heap_and_still_collects_new_cycles() -> None:
    import gc
    import weakref

    from app.cli import settle_heap

    before = gc.get_threshold()
    startup_object = _Cycle()
    try:
        settle_heap()
        # What existed when the app was built is out of the collector's reach...
        assert gc.get_freeze_count() > 0
        assert not any(o is startup_object for o in gc.get_objects())
        assert gc.get_threshold()[0] == 20_000
        assert gc.get_threshold()[1:] == before[1:]
        # ... while cyclic garbage made afterwards is still collected.
        later = _Cycle()
        gone = weakref.ref(later)
        del later
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
