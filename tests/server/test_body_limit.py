"""An oversized JSON body is answered with its 413 even while the client is still sending:
the server reads and drops the rest first (up to app.body_limit.DRAIN_BYTES) instead of
closing the connection under the sender, which a reverse proxy turns into a 502."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from app.body_limit import DRAIN_BYTES
from tests.server.factories import Community
from tests.server.live import live_server

# Larger than the loopback socket buffers, so the sender is still sending when the server
# answers; smaller than what the server drains.
BODY = 12 * 1024 * 1024
PIECE = 64 * 1024


def _send_and_read(url: str, chunked: bool) -> bytes:
    parts = urlsplit(url)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {BODY}"
    head = (
        f"POST /api/invites/accept HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\n{framing}\r\nConnection: close\r\n\r\n"
    ).encode()
    piece = b" " * PIECE
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as connection:
        connection.sendall(head)
        for _ in range(BODY // PIECE):
            connection.sendall(b"%x\r\n%s\r\n" % (PIECE, piece) if chunked else piece)
        if chunked:
            connection.sendall(b"0\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.mark.sqlite_only
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_oversized_body_still_being_sent_gets_its_413(
    community: Community, database_url: str, tmp_path: Path, chunked: bool
) -> None:
    assert BODY < DRAIN_BYTES
    with live_server(database_url, tmp_path / "data") as url:
        # Before: a broken pipe or a reset mid-send (ConnectionError), or no answer at all.
        answer = _send_and_read(url, chunked)
    status_line = answer.split(b"\r\n", 1)[0]
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", answer[:200]
    assert b"request body larger than" in answer
