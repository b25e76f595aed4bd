"""What `porchlight request download` leaves on disk: decrypted footage is private, and
nothing plaintext is left behind when the command fails or is stopped."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from porchlight.age import X25519Identity, encryptor, generate_identity
from porchlight.cli import CommandError
from porchlight.manifest import ClipManifest
from porchlight.request_cli import _decrypt


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
