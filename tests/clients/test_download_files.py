"""What `porchlight request download` leaves on disk: decrypted footage is private, and
nothing plaintext is left behind when the command fails or is stopped."""

from __future__ import annotations

import hashlib
import io
import os
import resource
from pathlib import Path
from typing import Any

import httpx
import pytest

from porchlight import request_cli
from porchlight.age import X25519Identity, encryptor, generate_identity
from porchlight.age.files import write_identity_file
from porchlight.cli import CommandError, main
from porchlight.client import PorchlightClient
from porchlight.consent import new_ask_key
from porchlight.manifest import ClipManifest
from porchlight.request_cli import _decrypt
from tests.clients.test_shared_manifest import shared_item


def _sealed_clip(tmp_path: Path, data: bytes) -> tuple[Path, X25519Identity, ClipManifest]:
    identity = generate_identity("x25519")
    assert isinstance(identity, X25519Identity)
    buffer = io.BytesIO()
    with encryptor(buffer, [identity.recipient()]) as writer:
        writer.write(data)
    source = tmp_path / "clip.age"
    source.write_bytes(buffer.getvalue())
    manifest = ClipManifest(
        clip_id="20261122T101500Z-abc123",
        device_key="unused",
        start="2026-11-22T10:15:00.000Z",
        end="2026-11-22T10:15:30.200Z",
        plaintext_sha256=hashlib.sha256(data).hexdigest(),
        ciphertext_sha256=hashlib.sha256(buffer.getvalue()).hexdigest(),
        ciphertext_size=len(buffer.getvalue()),
    )
    return source, identity, manifest


def test_decrypted_footage_is_private_even_under_umask_022(tmp_path: Path) -> None:
    data = os.urandom(100_000)
    source, identity, manifest = _sealed_clip(tmp_path, data)
    video = tmp_path / "clip.mp4"
    old = os.umask(0o022)
    try:
        _decrypt(source, video, [identity], manifest)
    finally:
        os.umask(old)
    assert video.read_bytes() == data
    assert video.stat().st_mode & 0o777 == 0o600


def test_footage_that_does_not_match_its_manifest_leaves_nothing(tmp_path: Path) -> None:
    source, identity, manifest = _sealed_clip(tmp_path, os.urandom(1000))
    wrong = ClipManifest(**{**manifest.__dict__, "plaintext_sha256": "0" * 64})
    with pytest.raises(CommandError, match="does not match"):
        _decrypt(source, tmp_path / "clip.mp4", [identity], wrong)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.age"]


def _serving(monkeypatch: pytest.MonkeyPatch, handler: Any) -> None:
    """Point the request commands at an in-process fake server."""

    def make(server: str, token: str, *, allow_http: bool = False) -> PorchlightClient:
        return PorchlightClient(server, token=token, transport=httpx.MockTransport(handler))

    monkeypatch.setattr(request_cli, "make_client", make)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["request", *argv, "--server", "http://127.0.0.1:9", "--token", "t"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def test_an_answer_that_is_not_json_is_one_error_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _serving(monkeypatch, lambda _: httpx.Response(200, html="<html>Sign in to Wi-Fi</html>"))
    code, err = _run(capsys, "status")
    assert code == 1
    assert err.startswith("porchlight: error: the server at http://127.0.0.1:9 sent an unexpected")
    assert "not JSON (text/html" in err


def test_an_invalid_server_url_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["request", "status", "--server", "http://[::1", "--token", "t"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("porchlight: error: server 'http://[::1' is not a valid URL")


def test_download_into_a_regular_file_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _serving(monkeypatch, lambda _: httpx.Response(200, json=[shared_item(new_ask_key())]))
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    code, err = _run(capsys, "download", "3", "-o", str(afile))
    assert code == 1
    assert err.startswith(f"porchlight: error: cannot use {afile} as the output directory")
    assert afile.read_text() == "keep me"


def test_a_write_error_during_download_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    item = shared_item(new_ask_key())
    body = os.urandom(300_000)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/shared"):
            return httpx.Response(200, json=[item])
        return httpx.Response(200, content=body)

    _serving(monkeypatch, handler)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Python ignores SIGXFSZ, so past the limit write() fails with EFBIG.
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        code, err = _run(capsys, "download", "3", "-o", str(tmp_path))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert code == 1
    assert err.startswith("porchlight: error: cannot write ")
    assert "File too large" in err
    assert list(tmp_path.iterdir()) == []


def test_a_passphrase_file_that_is_not_utf8_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    identity = generate_identity("x25519")
    assert isinstance(identity, X25519Identity)
    key = tmp_path / "agency.key"
    write_identity_file(key, identity, "right passphrase", work_factor=10)
    bad = tmp_path / "pp"
    bad.write_bytes(b"\xff\xfe secret\n")
    code, err = _run(capsys, "download", "3", "-i", str(key), "--passphrase-file", str(bad))
    assert code == 1
    assert err.startswith(f"porchlight: error: {bad} is not UTF-8 text")


def test_token_help_recommends_the_environment_variable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["request", "status", "--help"])
    assert "prefer setting $PORCHLIGHT_TOKEN" in " ".join(capsys.readouterr().out.split())


def test_a_download_never_writes_through_a_planted_link(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ciphertext went to the fixed name `<clip>.age.partial`, opened with open("wb"):
    a link planted there by another local user had the download written through it."""
    item = shared_item(new_ask_key())

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/shared"):
            return httpx.Response(200, json=[item])
        return httpx.Response(200, content=os.urandom(1301))  # matches no manifest

    _serving(monkeypatch, handler)
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"not the downloader's to change")
    name = "Resident-A-20261122T101500Z-abc123.age"
    (out / f"{name}.partial").symlink_to(victim)
    code, err = _run(capsys, "download", "3", "-o", str(out))
    assert code == 1
    assert "does not match its signed manifest" in err
    assert victim.read_bytes() == b"not the downloader's to change"
    assert sorted(p.name for p in out.iterdir()) == [f"{name}.partial"]  # only the link
