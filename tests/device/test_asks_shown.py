"""`porchlight device asks` shows the server's text and never lets it drive the terminal.

A request's fields are a requester's words; the server refuses control and bidi characters in
new requests (tests/server/requests/test_request_text.py), but a request stored before that
rule, or a server that lies, must still not be able to erase or forge a line on the resident's
screen. The server here is a real HTTP server on loopback answering one hostile ask.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from porchlight.cli import main
from tests.device.conftest import DeviceDir

# Clear the screen, go home, write a forged agency; a bidi override that turns what follows
# around; a carriage return that rewrites the line's start.
CLEAR = "\x1b[2J\x1b[H"
OVERRIDE = "\u202e"
FORGED = "  note          your neighbours at no. 14 and no. 16 have already shared"
ASK: dict[str, Any] = {
    "ask_id": "a1b2c3d4",
    "state": "pending",
    "deadline": "2026-11-29T10:00:00Z",
    "request": {
        "id": 7,
        "agency": "Testshire Police",
        "jurisdiction": "Testshire",
        "officer": "requester1",
        "warrant": {
            "court": f"Testshire Crown Court{CLEAR}  agency        Elm Street Watch",
            "docket_number": f"TC-1{OVERRIDE}gnissim",
            "judge": "HHJ Marlow\r  agency        Elm Street Watch",
            "issued_on": "2026-11-01",
            "expires_on": "2026-12-01",
            "document_sha256": "ab" * 32,
        },
        "offence": f"Einbruch – Müller, 北京\nsecond line\n{FORGED}\u2028\u200bx\u0085y",
        "window_start": "2026-11-20T08:00:00Z",
        "window_end": "2026-11-20T10:00:00Z",
        "area": {"lat": 51.5, "lon": -0.12, "radius_m": 300},
        "state": "open",
    },
    "agency_recipient": "age1" + "q" * 58,
    "clip_ids": [f"clip{CLEAR}"],
    "uploaded_clip_ids": [],
}


@pytest.fixture
def hostile_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = json.dumps([ASK] if self.path == "/api/device/asks" else {}).encode()
            self.send_response(200 if self.path == "/api/device/asks" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_device_asks_prints_no_control_or_bidi_character(
    hostile_server: str,
    device_dir: DeviceDir,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    (device_dir.path / "enrolment.json").write_text(
        json.dumps({"server": hostile_server, "device_id": 5, "credential": "d" * 43})
    )
    code = main(["device", "asks", "--data-dir", str(device_dir.path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    # Nothing a terminal acts on: no ESC, CR, C1 control, bidi override or line separator;
    # the only control character is the line feed between the CLI's own lines.
    assert [c for c in out if not c.isprintable() and c not in " \n"] == []
    # What was hidden is shown as an escape, beside the text around it.
    assert "Testshire Crown Court\\x1b[2J\\x1b[H  agency" in out
    assert "TC-1\\u202egnissim" in out
    assert "HHJ Marlow\\r  agency" in out
    assert "\\u2028\\u200bx\\x85y" in out
    # Accents and other scripts are text, shown as they are.
    assert "  offence       Einbruch – Müller, 北京\n" in out
    # The offence's own lines stay under its label: no line of it looks like the CLI's own.
    lines = out.splitlines()
    assert f"                {FORGED}" + "\\u2028\\u200bx\\x85y" in lines
    assert "                second line" in lines
    assert FORGED not in lines
    labels = [line.split()[0] for line in lines if line.startswith("  ") and line[2] != " "]
    assert labels == ["agency", "officer", "warrant", "offence", "window", "area", "you", "you"]
    assert "  agency        Testshire Police (Testshire)" in lines
    assert "clip\\x1b[2J\\x1b[H (not yet uploaded)" in out
