"""A real server process (uvicorn on a loopback port) for tests that need HTTP over a socket."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(
    database_url: str, data_dir: Path, settings: dict[str, str]
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "PORCHLIGHT_DATABASE_URL": database_url,
        "PORCHLIGHT_DATA_DIR": str(data_dir),
        "PORCHLIGHT_ARGON2_TIME_COST": "1",
        "PORCHLIGHT_ARGON2_MEMORY_KIB": "1024",
        **{f"PORCHLIGHT_{k.upper()}": v for k, v in settings.items()},
    }
    env.pop("PORCHLIGHT_CONFIG", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "app.main:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            output = process.stdout.read().decode() if process.stdout else ""
            raise RuntimeError(f"server exited early:\n{output}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("server did not answer /healthz within 30 s")
        time.sleep(0.1)


@contextmanager
def live_server(database_url: str, data_dir: Path, **settings: str) -> Iterator[str]:
    """Run `uvicorn app.main:create_app` against an already migrated database; yield its URL."""
    for attempt in range(3):
        try:
            process, url = _start(database_url, data_dir, settings)
            break
        except RuntimeError as error:
            # Another process may have taken the free port between probe and bind.
            if attempt == 2 or "address already in use" not in str(error).lower():
                raise
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
