"""`porchlight audit` over HTTP, against a loopback server that speaks the contract documented
in porchlight/audit_cli.py: a tlog-tiles log under /log/ whose entry bundles need an auditor's
token, cosignature submission, and the authenticated entries API. (The real server has its own
tests against the same contract.)"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi.testclient import TestClient

from app.permissions import Role
from porchlight.cli import main
from porchlight.tlog.checkpoint import (
    Checkpoint,
    add_signatures,
    sign_checkpoint,
    verified_cosignatures,
)
from porchlight.tlog.merkle import root
from porchlight.tlog.note import CosignatureVerifier, Note, parse_note, parse_signature_line
from porchlight.tlog.note import parse_verifier_key as parse_vkey
from porchlight.tlog.tiles import leaf_hashes
from porchlight.tlog.verify import HttpSource, VerifyError, verify_log
from tests.server.factories import Community
from tests.tlog.logs import build_log, entry, sign, signer, write_bundles_only, write_tiles

TOKEN = "auditor-token-123"
SIZE = 700


@dataclass
class LogServer:
    directory: Path
    url: str = ""
    witnesses: list[CosignatureVerifier] = field(default_factory=list)
    cosignatures: list[str] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)
    requests: list[tuple[str, str | None]] = field(default_factory=list)


def _handler(state: LogServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: bytes, kind: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            state.requests.append((parts.path, self.headers.get("Authorization")))
            if parts.path.startswith("/log/tile/entries/"):
                # Like the real server: bundles hold every entry, so auditors only.
                authorization = self.headers.get("Authorization")
                if authorization is None:
                    self._send(401, b'{"message": "sign in to do this"}')
                    return
                if authorization != f"Bearer {TOKEN}":
                    self._send(403, b'{"message": "your role may not do this (log:read)"}')
                    return
            if parts.path.startswith("/log/"):
                target = state.directory / parts.path.removeprefix("/log/")
                if not target.is_file():
                    self._send(404, b'{"detail": "not found"}')
                    return
                body = target.read_bytes()
                if target.name == "checkpoint":
                    body = add_signatures(
                        body.decode(), [parse_signature_line(x) for x in state.cosignatures]
                    ).encode()
                self._send(200, body, "application/octet-stream")
                return
            if parts.path == "/api/log/entries":
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._send(401, b'{"detail": "not authenticated"}')
                    return
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                rows = state.records
                if "subject" in query:
                    rows = [r for r in rows if r["subject"] == query["subject"]]
                    self._send(200, json.dumps({"entries": rows}).encode())
                    return
                start, limit = int(query["start"]), int(query["limit"])
                self._send(200, json.dumps(rows[start : start + limit]).encode())
                return
            self._send(404, b'{"detail": "not found"}')

        def do_POST(self) -> None:
            if self.path != "/log/cosignatures":
                self._send(404, b"{}")
                return
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            submitted = parse_signature_line(body["cosignature"])
            cosigned = Note(parse_note(body["checkpoint"]).text, (submitted,)).format()
            if not verified_cosignatures(cosigned, state.witnesses):
                self._send(403, b'{"detail": "unknown witness"}')
                return
            state.cosignatures.append(body["cosignature"])
            self._send(201, b"{}")

    return Handler


class _Server(ThreadingHTTPServer):
    request_queue_size = 64  # the default 5 drops the verifier's parallel connections
    daemon_threads = True


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LogServer]:
    # verify and cosign read the token from the environment unless a test says otherwise.
    monkeypatch.setenv("PORCHLIGHT_TOKEN", TOKEN)
    directory = tmp_path / "served"
    entries = [entry(i) for i in range(SIZE)]
    build_log(directory, entries)
    state = LogServer(directory, records=[json.loads(e) for e in entries])
    for record in state.records:
        record["details"] = {"note": 'a, "quoted" value', "n": record["details"]["n"]}
    httpd = _Server(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


VKEY = signer().verifier().vkey()


def test_verify_over_http(
    server: LogServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.json"
    args = ["audit", "verify", "--server", server.url, "--key", VKEY, "--state", str(state)]
    args += ["--token", TOKEN]
    assert main(args) == 0
    assert f"size {SIZE}, root " in capsys.readouterr().out
    assert ("/log/tile/entries/002.p/188", f"Bearer {TOKEN}") in server.requests
    # The server rewrites history and re-signs: the saved state catches it.
    forked = [*(entry(i) for i in range(SIZE - 1)), b"rewritten", entry(SIZE)]
    write_tiles(server.directory, forked)
    sign(server.directory, forked)
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "inconsistent with the checkpoint verified before" in err
    assert f"first differing entry is {SIZE - 1}" in err


def _tile_requests(server: LogServer, level: str) -> list[str]:
    return [path for path, _ in server.requests if path.startswith(f"/log/tile/{level}/")]


def test_verify_over_http_reads_level0_tiles_only_to_name_a_bad_entry(
    server: LogServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["audit", "verify", "--server", server.url, "--key", VKEY, "--token", TOKEN]
    assert main([*args, "--state", str(tmp_path / "a.json")]) == 0
    # The bundles and the upper tile are checked; the level-0 tiles are not needed.
    assert len(_tile_requests(server, "entries")) == 3
    assert _tile_requests(server, "1") == ["/log/tile/1/000.p/2"]
    assert _tile_requests(server, "0") == []
    # --all-tiles compares every level-0 tile too, and names a corrupt one.
    tile = server.directory / "tile/0/001"
    original = tile.read_bytes()
    changed = bytearray(original)
    changed[32 * 7 + 3] ^= 0x10
    tile.write_bytes(bytes(changed))
    assert main([*args, "--state", str(tmp_path / "b.json"), "--all-tiles"]) != 0
    err = capsys.readouterr().err
    assert "tile tile/0/001 is corrupt: its hash for entry 263 does not match" in err
    # It stops at the first corrupt tile and drops reads still queued, so how many of the
    # other level-0 tiles were fetched by then depends on timing; the corrupt one always was.
    assert "/log/tile/0/001" in _tile_requests(server, "0")
    # Without it the entries, which the signed root vouches for, are what is verified.
    assert main([*args, "--state", str(tmp_path / "c.json")]) == 0
    tile.write_bytes(original)
    # An edited entry: the root no longer matches, so the level-0 tiles are read to name it.
    server.requests.clear()
    entries = [entry(i) for i in range(SIZE)]
    entries[300] = entries[300].replace(b'"n": 300', b'"n": 301')
    write_bundles_only(server.directory, entries)
    assert main([*args, "--state", str(tmp_path / "d.json")]) != 0
    assert "entry 300 does not match the log's tree" in capsys.readouterr().err
    assert "/log/tile/0/001" in _tile_requests(server, "0")
    assert not (tmp_path / "d.json").exists()


def test_http_source_reconnects_when_a_kept_alive_connection_was_closed(
    tmp_path: Path,
) -> None:
    # An HTTP/1.1 server that closes every connection after one response without saying so
    # (as a keep-alive timeout does): each read after the first finds its connection dead.
    served: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            served.append(self.path)
            body = b"tile bytes"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.close_connection = True

    httpd = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        source = HttpSource(f"http://127.0.0.1:{httpd.server_address[1]}/log", parallel_reads=1)
        assert [source.read(f"tile/0/00{i}") for i in range(3)] == [b"tile bytes"] * 3
        source.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert served == ["/log/tile/0/000", "/log/tile/0/001", "/log/tile/0/002"]


def test_a_failed_read_stops_the_reads_not_yet_started(tmp_path: Path) -> None:
    # 48 bundles; the first one fails: the verifier stops without fetching the rest.
    directory = tmp_path / "big"
    build_log(directory, [entry(i) for i in range(48 * 256)])
    served: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            served.append(self.path)
            target = directory / self.path.removeprefix("/log/")
            status = 500 if self.path == "/log/tile/entries/000" else 200
            body = target.read_bytes() if status == 200 else b"broken"
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = _Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        source = HttpSource(f"http://127.0.0.1:{httpd.server_address[1]}/log", parallel_reads=2)
        with pytest.raises(VerifyError, match="tile/entries/000: HTTP 500"):
            verify_log(source, VKEY)
        source.close()
    finally:
        httpd.shutdown()
        httpd.server_close()
    bundles = [path for path in served if path.startswith("/log/tile/entries/")]
    assert "/log/tile/entries/000" in bundles
    assert len(bundles) < 48


def test_verify_without_an_auditor_token_is_a_clean_error(
    server: LogServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PORCHLIGHT_TOKEN")
    state = tmp_path / "state.json"
    args = ["audit", "verify", "--server", server.url, "--key", VKEY, "--state", str(state)]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "porchlight: error: the server refused to serve the log (HTTP 401" in err
    assert "porchlight: hint: entry bundles are served to auditors only" in err
    assert "Traceback" not in err and not state.exists()
    assert main([*args, "--token", "not-an-auditor"]) != 0
    err = capsys.readouterr().err
    assert "(HTTP 403" in err and "use an auditor's API token" in err
    assert "not-an-auditor" not in err
    signer_key = tmp_path / "witness.key"
    assert main(["audit", "keygen", "--name", "w.example/1", "-o", str(signer_key)]) == 0
    capsys.readouterr()
    cosign_args = ["audit", "cosign", "--server", server.url, "--key", VKEY]
    assert main([*cosign_args, "--signer-key", str(signer_key), "--state", str(state)]) != 0
    assert "refused to serve the log (HTTP 401" in capsys.readouterr().err
    assert server.cosignatures == []
    # Hash tiles and the checkpoint were fetched without any token: they stay public.
    assert ("/log/checkpoint", None) in server.requests


def test_unreachable_server_is_a_clean_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["audit", "verify", "--server", "http://127.0.0.1:9", "--key", VKEY]
    assert main([*args, "--state", str(tmp_path / "s.json")]) != 0
    assert "porchlight: error: log verification failed" in capsys.readouterr().err


def test_keygen_then_cosign_then_verify_with_witness(
    server: LogServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "witness.key"
    assert main(["audit", "keygen", "--name", "auditor.test/a1", "-o", str(key_file)]) == 0
    witness_vkey = capsys.readouterr().out.strip()
    assert key_file.stat().st_mode & 0o077 == 0
    assert main(["audit", "keygen", "--name", "auditor.test/a1", "-o", str(key_file)]) != 0
    assert "already exists" in capsys.readouterr().err
    witness = parse_vkey(witness_vkey)
    assert isinstance(witness, CosignatureVerifier)
    server.witnesses.append(witness)

    state = str(tmp_path / "state.json")
    cosign = ["audit", "cosign", "--server", server.url, "--key", VKEY, "--state", state]
    assert main([*cosign, "--signer-key", str(key_file)]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("— auditor.test/a1 ")
    assert server.cosignatures == [line]

    verify = ["audit", "verify", "--server", server.url, "--key", VKEY, "--state", state]
    assert main([*verify, "--witness", witness_vkey]) == 0
    assert f"size {SIZE}" in capsys.readouterr().out
    other_key = tmp_path / "other.key"
    assert main(["audit", "keygen", "--name", "auditor.test/b2", "-o", str(other_key)]) == 0
    other_vkey = capsys.readouterr().out.strip()
    assert main([*verify, "--witness", other_vkey]) != 0
    assert "not cosigned by auditor.test/b2" in capsys.readouterr().err

    # An unknown witness is refused by the server, and the CLI says so.
    assert main([*cosign, "--signer-key", str(other_key)]) != 0
    assert "server refused the cosignature: HTTP 403: unknown witness" in capsys.readouterr().err


def test_cosign_refuses_a_log_key_and_an_inconsistent_log(
    server: LogServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_key = tmp_path / "log.key"
    assert main(["audit", "keygen", "--name", "x.test/l", "-o", str(log_key), "--type", "log"]) == 0
    capsys.readouterr()
    state = str(tmp_path / "state.json")
    cosign = ["audit", "cosign", "--server", server.url, "--key", VKEY, "--state", state]
    assert main([*cosign, "--signer-key", str(log_key)]) != 0
    assert "not a witness key" in capsys.readouterr().err

    witness_key = tmp_path / "w.key"
    assert main(["audit", "keygen", "--name", "w.test/w", "-o", str(witness_key)]) == 0
    server.witnesses.append(parse_vkey(capsys.readouterr().out.strip()))  # type: ignore[arg-type]
    assert main([*cosign, "--signer-key", str(witness_key)]) == 0
    forked = [entry(i) for i in range(SIZE + 5)]
    forked[3] = b"rewritten"
    write_tiles(server.directory, forked)
    sign(server.directory, forked)
    assert main([*cosign, "--signer-key", str(witness_key)]) != 0
    assert "inconsistent" in capsys.readouterr().err
    assert len(server.cosignatures) == 1


def test_cosign_refuses_a_checkpoint_for_another_log(
    server: LogServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    witness_key = tmp_path / "w.key"
    assert main(["audit", "keygen", "--name", "w.test/w", "-o", str(witness_key)]) == 0
    server.witnesses.append(parse_vkey(capsys.readouterr().out.strip()))  # type: ignore[arg-type]
    # The log's key signs a checkpoint for another origin: a witness must not vouch for it
    # as this log's, even on its first run (no state to compare the origin with).
    entries = [entry(i) for i in range(SIZE)]
    checkpoint = Checkpoint("some.other/log", SIZE, root(leaf_hashes(entries)))
    (server.directory / "checkpoint").write_text(sign_checkpoint(checkpoint, signer()))
    cosign = ["audit", "cosign", "--server", server.url, "--key", VKEY]
    cosign += ["--signer-key", str(witness_key)]
    assert main([*cosign, "--state", str(tmp_path / "a.json")]) != 0
    assert "checkpoint is for log 'some.other/log', not" in capsys.readouterr().err
    assert server.cosignatures == []
    assert not (tmp_path / "a.json").exists()
    # Expected explicitly, the witness cosigns it.
    assert main([*cosign, "--state", str(tmp_path / "b.json"), "--origin", "some.other/log"]) == 0
    assert "verified some.other/log: size 700" in capsys.readouterr().out
    assert len(server.cosignatures) == 1


@pytest.mark.parametrize(
    "path",
    [
        "/log/tile/99999999999999999999/000",
        "/log/tile/64/000",
        "/log/tile/0/x999/x999/x999/x999/x999/x999/x999/000",
        "/log/tile/0/x036/x028/x797/x018/x963/968",
        "/log/tile/entries/x999/x999/x999/x999/x999/x999/x999/000",
        "/log/tile/entries/x036/x028/x797/x018/x963/967",
    ],
)
def test_the_real_server_answers_404_for_a_tile_no_log_can_have(
    path: str, client: TestClient, community: Community
) -> None:
    # Paths the parser accepted used to reach the database with an index beyond 64 bits
    # (SQLite: OverflowError, a 500). Hash tiles are public; bundles need an auditor.
    auditor = community.auth(community.person(Role.auditor))
    for headers in ({}, auditor):
        response = client.get(path, headers=headers)
        assert response.status_code == 404, response.text
        assert "tile" in response.json()["message"]


def test_timeline(server: LogServer, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["audit", "timeline", "12", "--server", server.url, "--token", TOKEN]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "request 12: 5 log entries"
    assert [line.split()[0] for line in out[1:]] == [f"#{i}" for i in range(60, 65)]
    assert "review.approve" in out[2]
    assert main(["audit", "timeline", "99999", "--server", server.url, "--token", TOKEN]) != 0
    assert "no log entries about request 99999" in capsys.readouterr().err


def test_api_commands_need_a_token(
    server: LogServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PORCHLIGHT_TOKEN", raising=False)
    assert main(["audit", "timeline", "1", "--server", server.url]) != 0
    assert "needs an API token" in capsys.readouterr().err
    assert main(["audit", "timeline", "1", "--server", server.url, "--token", "wrong"]) != 0
    err = capsys.readouterr().err
    assert "refused the token (HTTP 401)" in err
    assert "wrong" not in err
    monkeypatch.setenv("PORCHLIGHT_TOKEN", TOKEN)
    assert main(["audit", "timeline", "1", "--server", server.url]) == 0
    assert ("/api/log/entries", f"Bearer {TOKEN}") in server.requests


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_pages_through_every_entry(
    fmt: str,
    server: LogServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("porchlight.audit_cli.EXPORT_PAGE_SIZE", 256)
    target = tmp_path / f"log.{fmt}"
    args = ["audit", "export", "--server", server.url, "--format", fmt, "-o", str(target)]
    assert main([*args, "--token", TOKEN]) == 0
    assert f"wrote {SIZE} entries" in capsys.readouterr().out
    pages = [path for path, _ in server.requests if path == "/api/log/entries"]
    assert len(pages) == 3
    text = target.read_text()
    if fmt == "jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
        assert rows == server.records
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [int(r["index"]) for r in rows] == list(range(SIZE))
        assert json.loads(rows[5]["details"]) == server.records[5]["details"]
        assert rows[5]["action"] == server.records[5]["action"]


def test_export_is_written_privately_and_a_failed_write_changes_nothing(
    server: LogServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = tmp_path / "log.jsonl"
    target.write_text("the previous export\n")
    (tmp_path / "log.jsonl.tmp").write_text("another export, half way through\n")
    args = ["audit", "export", "--server", server.url, "--format", "jsonl", "-o", str(target)]
    # The disk fails at the fsync: the previous export stays, nothing is left beside it.
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", fsync)
    assert main(args) != 0
    err = capsys.readouterr().err
    assert f"porchlight: error: cannot write {target}: [Errno 5] I/O error" in err
    assert "Traceback" not in err
    assert target.read_text() == "the previous export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl", "log.jsonl.tmp", "served"]
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert main(args) == 0
    assert f"wrote {SIZE} entries" in capsys.readouterr().out
    assert len(target.read_text().splitlines()) == SIZE
    # Every entry says who was asked and who declined: readable by its owner only.
    assert target.stat().st_mode & 0o077 == 0
    assert (tmp_path / "log.jsonl.tmp").read_text() == "another export, half way through\n"
