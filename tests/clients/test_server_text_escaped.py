"""A server's words are shown, never obeyed: the command lines print a refusal's message (and a
device's decline answer) with every control and bidi character escaped, so a malicious or
compromised server cannot clear the terminal, move its cursor or reorder the line."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from porchlight.cli import main
from porchlight.text import shown
from tests.clients.test_cli_errors import enrolled_device_dir

# Clear the screen, go home, then a bidi override that turns what follows around.
HOSTILE = "no such request\x1b[2J\x1b[H\u202eporchlight: shared 3 clips"
SHOWN = "no such request\\x1b[2J\\x1b[H\\u202eporchlight: shared 3 clips"
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY")


@dataclass
class HostileServer:
    """What the fake server says to every call: a status, a Content-Type and a body."""

    url: str = ""
    status: int = 404
    content_type: str = "application/json"
    body: bytes = json.dumps({"error": "not_found", "message": HOSTILE}).encode()


@pytest.fixture
def hostile_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[HostileServer]:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    server = HostileServer()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(server.status)
            self.send_header("Content-Type", server.content_type)
            self.send_header("Content-Length", str(len(server.body)))
            self.end_headers()
            self.wfile.write(server.body)

        do_GET = do_POST = _answer

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield server
    httpd.shutdown()
    httpd.server_close()


def _terminal_safe(text: str) -> bool:
    """Nothing a terminal acts on but the line feeds between the CLI's own lines."""
    return [c for c in text if not c.isprintable() and c != "\n"] == []


def test_a_refusals_json_message_is_printed_escaped(
    hostile_server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["request", "status", "7", "--server", hostile_server.url, "--token", "t"])
    out, err = capsys.readouterr()
    assert code == 1
    assert _terminal_safe(out + err), repr(err)
    [line] = err.splitlines()[:1]
    assert line.startswith("porchlight: error: ") and SHOWN in line, repr(err)
    assert "porchlight: shared 3 clips" not in err.splitlines()[1:]


def test_a_refusal_that_is_not_json_is_printed_escaped(
    hostile_server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile_server.status = 403
    hostile_server.content_type = "text/plain; charset=utf-8"
    hostile_server.body = HOSTILE.encode()
    code = main(["request", "status", "--server", hostile_server.url, "--token", "t"])
    _, err = capsys.readouterr()
    assert code == 1
    assert _terminal_safe(err), repr(err)
    assert SHOWN in err


@pytest.fixture
def device_dir(tmp_path: Path, hostile_server: HostileServer) -> Path:
    """A camera agent data directory enrolled with the hostile server."""
    return enrolled_device_dir(tmp_path / "device", hostile_server.url)


def test_the_device_prints_a_refusal_escaped(
    device_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["device", "asks", "--data-dir", str(device_dir), "--retries", "0"])
    out, err = capsys.readouterr()
    assert code == 1
    assert _terminal_safe(out + err), repr(err)
    assert SHOWN in err


def test_the_device_prints_a_declines_state_escaped(
    hostile_server: HostileServer, device_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile_server.status = 200
    hostile_server.body = json.dumps({"ask_id": "a1b2c3d4", "state": HOSTILE}).encode()
    code = main(["device", "decline", "a1b2c3d4", "--data-dir", str(device_dir)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert _terminal_safe(out), repr(out)
    assert out == f"declined ask a1b2c3d4 ({SHOWN}); nothing was shared\n"


def test_shown_escapes_only_what_a_terminal_would_act_on() -> None:
    assert shown(HOSTILE) == SHOWN
    assert shown(SHOWN) == SHOWN  # shown twice changes nothing
    text = "Polizei München – 北京\u00a0ТС; سرقة"
    assert shown(text) == text
    assert shown("a\tb\r\nc\x85\u2028\u200b") == "a\\tb\\r\\nc\\x85\\u2028\\u200b"


def test_request_status_and_close_print_server_text_escaped(
    hostile_server: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """What a request's fields say (offence, state) comes from the server: shown escaped."""
    hostile_server.status = 200
    hostile_server.body = json.dumps(
        [
            {
                "id": 7,
                "state": "open",
                "window_start": "2026-11-01T10:00:00Z",
                "window_end": "2026-11-01T12:00:00Z",
                "offence": HOSTILE,
            }
        ]
    ).encode()
    code = main(["request", "status", "--server", hostile_server.url, "--token", "t"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert _terminal_safe(out), repr(out)
    assert out.endswith(f"  {SHOWN}\n")
    hostile_server.body = json.dumps({"id": 7, "state": HOSTILE}).encode()
    code = main(["request", "close", "7", "--server", hostile_server.url, "--token", "t"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert out == f"request 7 is {SHOWN}\n"
