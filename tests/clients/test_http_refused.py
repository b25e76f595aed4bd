"""No command sends a token, a password or a device credential over plain http:// to another
host unless told to with --allow-http (porchlight.client.validate_server_url).

The remote host is 192.0.2.1 (TEST-NET-1: nothing answers there). Where a test needs to see
what would have crossed the network, the environment names a recording proxy on loopback, which
httpx and the audit verifier both honour: a plain-HTTP request reaches it with the remote URL,
so "nothing was sent" and "the request went out" are both observed, not inferred."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from device.config import config_template
from device.keys import DEVICE_KEY_NAME, create_device_key
from porchlight.age import generate_identity
from porchlight.cli import main
from porchlight.client import PorchlightClient, ServerURLError, validate_server_url
from tests.tlog.logs import signer

REMOTE = "http://192.0.2.1"
TOKEN = "secret-token-123"
REFUSED = "refusing plain http:// to 192.0.2.1, which is not this machine"
ALL_PROXY_VARIABLES = (
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
)


@dataclass
class Proxy:
    """What reached the proxy: (method, target, Authorization header)."""

    seen: list[tuple[str, str, str | None]] = field(default_factory=list)


ENTRY = {
    "index": 0,
    "time": "2026-11-22T10:00:00Z",
    "actor": "user:1",
    "action": "request:submit",
    "subject": "request:1",
    "details": {},
}
ANSWERS: dict[tuple[str, str], Any] = {
    ("GET", "/api/requests"): [],
    ("POST", "/api/devices/enroll"): {"device_id": 5, "credential": "d" * 43},
    ("GET", "/api/device/asks"): [],
    ("GET", "/api/log/entries"): {"entries": [ENTRY]},
}


def _handler(proxy: Proxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _answer(self) -> None:
            proxy.seen.append((self.command, self.path, self.headers.get("Authorization")))
            if self.command == "CONNECT":  # an https:// URL: a tunnel this proxy will not make
                self.send_response(502)
                self.end_headers()
                return
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            path = httpx.URL(self.path).path
            answer = ANSWERS.get((self.command, path))
            body = json.dumps(answer if answer is not None else {"message": "no"}).encode()
            self.send_response(200 if answer is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_CONNECT = _answer

    return Handler


@pytest.fixture
def proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Proxy]:
    state = Proxy()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    for name in ALL_PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(name, url)
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _no_token_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORCHLIGHT_TOKEN", raising=False)
    monkeypatch.delenv("PORCHLIGHT_SERVER", raising=False)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code: int, err: str) -> None:
    assert code != 0
    assert f"porchlight: error: {REFUSED}" in err
    assert "use https://, or pass --allow-http" in err
    assert "cannot reach" not in err and "Traceback" not in err
    assert TOKEN not in err


# -- the rule ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://192.0.2.1",
        "http://example.org:8000/porchlight",
        "http://127.0.0.1.example.org",  # a name, not the address
        "http://0.0.0.0:8000",
        "http://10.0.0.5",
        "http://[2001:db8::1]:8000",
        "HTTP://example.org",
    ],
)
def test_plain_http_to_another_host_is_refused(url: str) -> None:
    with pytest.raises(ServerURLError, match="use https://, or pass --allow-http"):
        validate_server_url(url)
    with pytest.raises(ServerURLError, match="refusing plain http://"):
        PorchlightClient(url, token=TOKEN)
    assert validate_server_url(url, allow_http=True) == url
    PorchlightClient(url, token=TOKEN, allow_http=True).close()


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8000",
        "http://LocalHost.",
        "http://127.0.0.1",
        "http://127.3.2.1:9/x",
        "http://[::1]:8000",
        "https://192.0.2.1",
        "https://porchlight.example.org",
    ],
)
def test_loopback_and_https_are_accepted(url: str) -> None:
    assert validate_server_url(url) == url
    PorchlightClient(url, token=TOKEN).close()


def test_other_schemes_and_hostless_urls_are_refused_even_with_the_opt_in() -> None:
    for url, message in (
        ("ftp://example.org", "is not an http(s) URL"),
        ("example.org", "is not an http(s) URL"),
        ("http://", "names no host"),
        ("http://[::1", "is not a valid URL"),
    ):
        with pytest.raises(ServerURLError, match=message.replace("(", r"\(").replace(")", r"\)")):
            validate_server_url(url, allow_http=True)


def test_an_in_process_transport_is_not_checked() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=[]))
    with PorchlightClient(REMOTE, token=TOKEN, transport=transport) as client:
        assert client.get("/api/requests") == []


# -- porchlight request ---------------------------------------------------------------------


def test_request_refuses_fast_without_touching_the_network(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ALL_PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    started = time.monotonic()
    code, _, err = run(["request", "status", "--server", REMOTE, "--token", TOKEN], capsys)
    assert time.monotonic() - started < 5  # refused, not a connection timing out
    assert_refused(code, err)
    assert len(err.strip().splitlines()) == 1


def test_request_sends_nothing_over_plain_http(
    proxy: Proxy, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for argv in (
        ["request", "status", "--server", REMOTE, "--token", TOKEN],
        ["request", "close", "3", "--server", f"{REMOTE}:8000/"],
        ["request", "download", "3", "--server", "http://example.org"],
    ):
        monkeypatch.setenv("PORCHLIGHT_TOKEN", TOKEN)
        code, _, err = run(argv, capsys)
        assert code != 0, argv
        assert "refusing plain http://" in err and "--allow-http" in err, argv
    monkeypatch.setenv("PORCHLIGHT_SERVER", REMOTE)
    assert_refused(*run(["request", "status"], capsys)[::2])
    assert proxy.seen == []


def test_request_with_allow_http_sends(proxy: Proxy, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        ["request", "status", "--server", REMOTE, "--token", TOKEN, "--allow-http"], capsys
    )
    assert code == 0, err
    assert proxy.seen == [("GET", f"{REMOTE}/api/requests", f"Bearer {TOKEN}")]


def test_request_over_https_is_attempted(proxy: Proxy, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        ["request", "status", "--server", "https://192.0.2.1", "--token", TOKEN], capsys
    )
    # Through the proxy's tunnel, which this proxy refuses: the URL itself was accepted.
    assert code == 1 and "cannot reach the server at https://192.0.2.1" in err
    assert "refusing" not in err
    assert [(method, target) for method, target, _ in proxy.seen] == [("CONNECT", "192.0.2.1:443")]
    assert proxy.seen[0][2] is None  # the token stays inside the (never opened) TLS tunnel


def test_request_to_loopback_needs_no_flag(
    proxy: Proxy, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # NO_PROXY keeps the call off the proxy, so it meets a closed loopback port.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    code, _, err = run(
        ["request", "status", "--server", "http://127.0.0.1:1", "--token", TOKEN], capsys
    )
    assert code == 1 and "cannot reach the server at http://127.0.0.1:1" in err
    assert "refusing" not in err


# -- porchlight device ------------------------------------------------------------------------


ENROLL = ["device", "enroll", "--server", REMOTE, "--code", "ABCD-EFGH"]


@pytest.fixture
def device_dir(tmp_path: Path) -> Path:
    path = tmp_path / "device"
    path.mkdir()
    identity = generate_identity("x25519")
    (path / "config.toml").write_text(config_template("0", [str(identity.recipient())], None))
    return path


def test_enroll_refuses_before_making_or_sending_anything(
    proxy: Proxy, capsys: pytest.CaptureFixture[str], device_dir: Path
) -> None:
    before = sorted(p.name for p in device_dir.iterdir())
    code, _, err = run(
        [*ENROLL, "--data-dir", str(device_dir)],
        capsys,
    )
    assert_refused(code, err)
    assert "nothing was sent" in err
    assert sorted(p.name for p in device_dir.iterdir()) == before  # no key, no enrolment
    assert proxy.seen == []


def test_enroll_with_allow_http_keeps_the_opt_in_for_later_calls(
    proxy: Proxy, capsys: pytest.CaptureFixture[str], device_dir: Path
) -> None:
    code, out, err = run(
        [*ENROLL, "--allow-http", "--data-dir", str(device_dir)],
        capsys,
    )
    assert code == 0, err
    assert "enrolled as device 5" in out
    saved = json.loads((device_dir / "enrolment.json").read_text())
    assert saved["server"] == REMOTE and saved["allow_http"] is True
    # Later commands read the server and the opt-in from the enrolment: no flag needed.
    code, _, err = run(["device", "asks", "--data-dir", str(device_dir)], capsys)
    assert code == 0, err
    assert [(method, target) for method, target, _ in proxy.seen] == [
        ("POST", f"{REMOTE}/api/devices/enroll"),
        ("GET", f"{REMOTE}/api/device/asks"),
    ]
    assert proxy.seen[1][2] == "Device " + "d" * 43


def test_an_earlier_plain_http_enrolment_is_refused_until_allowed(
    proxy: Proxy, capsys: pytest.CaptureFixture[str], device_dir: Path
) -> None:
    create_device_key(device_dir)
    (device_dir / "enrolment.json").write_text(
        json.dumps({"server": REMOTE, "device_id": 5, "credential": "d" * 43})
    )
    for argv in (
        ["device", "asks"],
        ["device", "decline", "4"],
        ["device", "consent", "4", "--clips", "x"],
    ):
        code, _, err = run([*argv, "--data-dir", str(device_dir)], capsys)
        assert_refused(code, err)
        assert "enrolment.json" in err  # where the URL came from
    assert proxy.seen == []
    code, _, err = run(["device", "asks", "--allow-http", "--data-dir", str(device_dir)], capsys)
    assert code == 0, err
    assert [(m, t) for m, t, _ in proxy.seen] == [("GET", f"{REMOTE}/api/device/asks")]
    assert (device_dir / DEVICE_KEY_NAME).exists()


def test_a_damaged_opt_in_is_named(capsys: pytest.CaptureFixture[str], device_dir: Path) -> None:
    create_device_key(device_dir)
    (device_dir / "enrolment.json").write_text(
        json.dumps({"server": REMOTE, "device_id": 5, "credential": "d", "allow_http": "yes"})
    )
    code, _, err = run(["device", "asks", "--data-dir", str(device_dir)], capsys)
    assert code == 1 and "enrolment.json is damaged" in err


# -- porchlight audit -------------------------------------------------------------------------

VKEY = signer().verifier().vkey()


def test_audit_never_sends_a_token_over_plain_http(
    proxy: Proxy,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signer_key = tmp_path / "witness.key"
    assert main(["audit", "keygen", "--name", "w.example/1", "-o", str(signer_key)]) == 0
    capsys.readouterr()
    state = ["--state", str(tmp_path / "state.json")]
    cosign = ["audit", "cosign", "--server", REMOTE, "--key", VKEY, "--token", TOKEN]
    for argv in (
        ["audit", "timeline", "1", "--server", REMOTE, "--token", TOKEN],
        ["audit", "export", "--server", REMOTE, "--format", "csv", "--token", TOKEN],
        ["audit", "verify", "--server", REMOTE, "--key", VKEY, "--token", TOKEN, *state],
        [*cosign, "--signer-key", str(signer_key), *state],
    ):
        assert_refused(*run(argv, capsys)[::2])
    monkeypatch.setenv("PORCHLIGHT_TOKEN", TOKEN)  # the token from the environment, too
    assert_refused(
        *run(["audit", "verify", "--server", REMOTE, "--key", VKEY, *state], capsys)[::2]
    )
    assert proxy.seen == []
    assert not (tmp_path / "state.json").exists()


def test_audit_with_allow_http_sends(proxy: Proxy, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        ["audit", "timeline", "1", "--server", REMOTE, "--token", TOKEN, "--allow-http"], capsys
    )
    assert code == 0, err
    assert "request 1: 1 log entries" in out
    assert proxy.seen == [
        ("GET", f"{REMOTE}/api/log/entries?subject=request%3A1", f"Bearer {TOKEN}")
    ]


def test_audit_verify_without_a_token_reads_public_tiles_over_http(
    proxy: Proxy, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Nothing secret would be sent (and everything read is checked against the key).
    state = ["--state", str(tmp_path / "state.json")]
    code, _, err = run(["audit", "verify", "--server", REMOTE, "--key", VKEY, *state], capsys)
    assert code == 1 and "refusing" not in err
    assert proxy.seen and all(auth is None for _, _, auth in proxy.seen)
    assert proxy.seen[0][:2] == ("GET", f"{REMOTE}/log/checkpoint")
