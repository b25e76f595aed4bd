"""The requester's check of a shared clip's manifest (porchlight.request_cli.verify_shared):
signed by the per-ask key the server names, and by nothing else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from porchlight.consent import new_ask_key, shared_manifest
from porchlight.manifest import ClipManifest, ManifestError, public_key_text, sign_manifest
from porchlight.request_cli import verify_shared


def shared_item(ask_key: Ed25519PrivateKey) -> dict[str, Any]:
    """A shared-clip entry as GET /api/requests/{id}/shared returns it."""
    device_key = Ed25519PrivateKey.generate()
    original = ClipManifest(
        clip_id="20261122T101500Z-abc123",
        device_key=public_key_text(device_key.public_key()),
        start="2026-11-22T10:15:00.000Z",
        end="2026-11-22T10:15:30.200Z",
        plaintext_sha256="a" * 64,
        ciphertext_sha256="b" * 64,
        ciphertext_size=1234,
    )
    json.loads(sign_manifest(original, device_key))  # the device's own manifest is valid too
    return listed(shared_manifest(original, "c" * 64, 1301, ask_key), ask_key)


def listed(signed: str, ask_key: Ed25519PrivateKey) -> dict[str, Any]:
    """The listing entry for a shared manifest signed with ask_key: the document without its
    signature, the signature beside it, and the key that made it."""
    document = json.loads(signed)
    signature = document.pop("signature")
    return {
        "shared_clip_id": "1",
        "pseudonym": "Resident A",
        "manifest": document,
        "manifest_signature": signature,
        "signer_public_key": public_key_text(ask_key.public_key()),
        "downloadable": True,
    }


def test_a_shared_manifest_verifies_with_the_ask_key() -> None:
    item = shared_item(new_ask_key())
    manifest, signed = verify_shared(item)
    assert manifest.clip_id == "20261122T101500Z-abc123"
    assert manifest.ciphertext_sha256 == "c" * 64 and manifest.ciphertext_size == 1301
    assert json.loads(signed)["signature"] == item["manifest_signature"]
    # A manifest that carries its own signature field is accepted as well.
    embedded = item | {"manifest": item["manifest"] | {"signature": item["manifest_signature"]}}
    assert verify_shared(embedded)[0] == manifest


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda i: i["manifest"].update(plaintext_sha256="d" * 64), "does not verify"),
        (lambda i: i["manifest"].update(end="2026-11-22T11:00:00.000Z"), "does not verify"),
        (
            lambda i: i.update(signer_public_key=public_key_text(new_ask_key().public_key())),
            "different device",
        ),
        (lambda i: i.update(manifest_signature="AAAA"), "canonical base64"),
        (lambda i: i["manifest"].update(extra="x"), "fields differ"),
        (lambda i: i.pop("signer_public_key"), "no signing key"),
    ],
)
def test_a_tampered_shared_manifest_is_refused(change: Any, message: str) -> None:
    item = shared_item(new_ask_key())
    change(item)
    with pytest.raises(ManifestError, match=message):
        verify_shared(item)
