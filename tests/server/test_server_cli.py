"""`porchlight server run|migrate|create-admin|invite` as a person would type them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from app.migrate import upgrade
from tests.server.databases import empty_database, half_migrated_sqlite
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
        workers = _workers(process)
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


def _workers(process: subprocess.Popen[Any]) -> set[int]:
    """The serving processes `server run` started (not multiprocessing's resource tracker)."""
    found = set()
    for pid in _children(process.pid):
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
        if b"multiprocessing" in command and b"resource_tracker" not in command:
            found.add(pid)
    return found


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


_LISTEN, _ESTABLISHED = "0A", "01"


def _tcp_inodes(port: int, state: str) -> list[int]:
    """Inodes of the IPv4 TCP sockets whose local port is `port`, in `state` (/proc/net/tcp)."""
    found = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
            found.append(int(fields[9]))
    return found


def test_each_worker_listens_on_its_own_socket_and_connections_are_spread(
    tmp_path: Path,
) -> None:
    # Connections opened in a burst and kept (a reverse proxy's pool, the load generator):
    # with one shared socket, the first worker to wake accepted them all (64 of 64 in three
    # runs of this test against uvicorn's own supervisor).
    port = free_port()
    process = _server_run(tmp_path, port, "--workers", "2")
    connections: list[socket.socket] = []
    try:
        assert _healthy(process, port).status_code == 200
        workers = _workers(process)
        assert len(workers) == 2
        listening = _tcp_inodes(port, _LISTEN)
        assert len(listening) == 2
        held = {pid: _socket_inodes(pid) & set(listening) for pid in workers}
        assert all(len(inodes) == 1 for inodes in held.values()), held
        assert len(set().union(*held.values())) == 2  # one each, not one shared

        for _ in range(64):
            connections.append(socket.create_connection(("127.0.0.1", port)))
        for sock in connections:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        for sock in connections:
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        established = set(_tcp_inodes(port, _ESTABLISHED))
        served = sorted(len(_socket_inodes(pid) & established) for pid in workers)
        assert sum(served) == 64
        # Spread by a hash of each connection's addresses: 16 or fewer of 64 on one worker has
        # a probability under 1e-4.
        assert served[0] > 16, served
    finally:
        for sock in connections:
            sock.close()
        process.terminate()
        process.wait(timeout=30)


def test_a_worker_that_dies_is_replaced_and_its_socket_keeps_its_connections(
    tmp_path: Path,
) -> None:
    port = free_port()
    process = _server_run(tmp_path, port, "--workers", "2")
    try:
        assert _healthy(process, port).status_code == 200
        first, second = sorted(_workers(process))
        os.kill(first, signal.SIGKILL)
        # Until its replacement serves, what the kernel gives the dead worker's socket waits.
        for _ in range(20):
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=60).status_code == 200
        deadline = time.monotonic() + 30
        while len(_workers(process)) < 2:
            assert time.monotonic() < deadline, "no replacement worker"
            time.sleep(0.1)
        assert second in _workers(process) and first not in _workers(process)
        assert len(_tcp_inodes(port, _LISTEN)) == 2
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
    assert process.returncode == 0
    assert process.stdout is not None
    said = process.stdout.read()
    assert f"(pid {first}) exited with code -9; starting another" in said
    assert _tcp_inodes(port, _LISTEN) == []


def test_a_second_server_on_a_taken_port_is_refused(tmp_path: Path) -> None:
    # SO_REUSEPORT alone would let a second server join the first one's port.
    port = free_port()
    process = _server_run(tmp_path, port, "--workers", "2")
    try:
        assert _healthy(process, port).status_code == 200
        second = subprocess.run(
            [*PORCHLIGHT, "server", "run", "--port", str(port), "--workers", "2"],
            cwd=REPO,
            env=_env(tmp_path / "other"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1
        assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in second.stderr
        assert "Traceback" not in second.stderr
        assert len(_tcp_inodes(port, _LISTEN)) == 2  # the first server's, nobody else's
    finally:
        process.terminate()
        process.wait(timeout=30)


def _server_with(tmp_path: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = _env(tmp_path / "data")
    env["PORCHLIGHT_DATABASE_URL"] = database_url
    return subprocess.run(
        [*PORCHLIGHT, "server", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _one_error(result: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """The `porchlight: error:` line and its hint, checking that nothing else was printed."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    error, hint = result.stderr.strip().splitlines()
    assert error.startswith("porchlight: error: ") and hint.startswith("porchlight: hint: ")
    return error, hint


def test_migrate_names_a_database_from_a_newer_release(backend: str, tmp_path: Path) -> None:
    with empty_database(backend, tmp_path) as url:
        upgrade(url)
        engine = create_engine(url)
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = '0099'"))
        engine.dispose()
        error, hint = _one_error(_server_with(tmp_path, url, "migrate"))
        assert "written by a newer Porchlight (schema revision 0099" in error
        assert "restore a backup" in hint


@pytest.mark.sqlite_only
def test_migrate_says_why_it_failed_on_a_database_it_reached(tmp_path: Path) -> None:
    url = half_migrated_sqlite(tmp_path)
    error, _ = _one_error(_server_with(tmp_path, url, "migrate"))
    assert error == "porchlight: error: migration failed: table log_pending already exists"


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ("database_url", "said"),
    [
        ("postgresql+psycopg://porchlight@127.0.0.1:1/porchlight", "cannot reach the database"),
        ("mysql://porchlight@localhost/porchlight", "names a 'mysql' database"),
        ("notaurl", "PORCHLIGHT_DATABASE_URL is not a database URL"),
        ("postgresql+asyncpg://porchlight@localhost/x", "'postgresql+asyncpg' driver"),
    ],
)
def test_bad_database_urls_get_one_line(tmp_path: Path, database_url: str, said: str) -> None:
    for command in ("migrate", "log-key"):
        error, hint = _one_error(_server_with(tmp_path, database_url, command))
        assert said in error
        assert "PORCHLIGHT_DATABASE_URL" in hint


@pytest.mark.sqlite_only
def test_a_data_directory_that_cannot_be_made_gets_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory\n")
    for data_dir in (blocker / "data", blocker):
        env = _env(data_dir)
        result = subprocess.run(
            [*PORCHLIGHT, "server", "migrate"], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 1
        assert "Traceback" not in result.stderr
        assert "PORCHLIGHT_DATA_DIR" in result.stderr
        assert len(result.stderr.strip().splitlines()) <= 2


@pytest.mark.sqlite_only
def test_run_help_describes_host_and_port_with_their_defaults() -> None:
    result = subprocess.run(
        [*PORCHLIGHT, "server", "run", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    usage = " ".join(result.stdout.split())
    assert "--host HOST address to listen on (default: 127.0.0.1" in usage
    assert "--port PORT TCP port to listen on (default: 8000)" in usage
