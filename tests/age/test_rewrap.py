"""Rewrap: a new header in front of the byte-identical payload (DESIGN: how a clip is shared)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from porchlight.age import (
    CHUNK_SIZE,
    AuthenticationError,
    HybridIdentity,
    NoMatchError,
    X25519Identity,
    decryptor,
    encryptor,
    generate_identity,
    parse_header,
    rewrap,
    rewrap_file,
)


def sealed_clip(identity: HybridIdentity | X25519Identity, size: int) -> tuple[bytes, bytes]:
    data = os.urandom(size)
    out = io.BytesIO()
    with encryptor(out, [identity.recipient()]) as writer:
        writer.write(data)
    return data, out.getvalue()


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, 5 * CHUNK_SIZE + 3])
def test_rewrap_keeps_the_payload_and_changes_only_the_header(
    size: int, pq_identity: HybridIdentity
) -> None:
    agency = generate_identity()
    data, original = sealed_clip(pq_identity, size)
    out = io.BytesIO()
    rewrap(io.BytesIO(original), out, [pq_identity], [agency.recipient()])
    rewrapped = out.getvalue()

    old_header = parse_header(io.BytesIO(original))
    new_header = parse_header(io.BytesIO(rewrapped))
    assert original[old_header.payload_offset :] == rewrapped[new_header.payload_offset :]
    assert new_header.mac != old_header.mac
    # The homeowner's stanza is gone: exactly one stanza, and only the agency opens it.
    assert len(new_header.stanzas) == 1
    old_stanza = old_header.stanzas[0]
    assert all(s.args != old_stanza.args for s in new_header.stanzas)
    assert decryptor(io.BytesIO(rewrapped), [agency]).read() == data
    with pytest.raises(NoMatchError):
        decryptor(io.BytesIO(rewrapped), [pq_identity])


def test_rewrap_to_several_recipients_and_from_armor(x25519_identity: X25519Identity) -> None:
    a, b = generate_identity("x25519"), generate_identity("x25519")
    data = os.urandom(3 * CHUNK_SIZE)
    armored = io.BytesIO()
    with encryptor(armored, [x25519_identity.recipient()], armor=True) as writer:
        writer.write(data)
    out = io.BytesIO()
    rewrap(io.BytesIO(armored.getvalue()), out, [x25519_identity], [a.recipient(), b.recipient()])
    for identity in (a, b):
        assert decryptor(io.BytesIO(out.getvalue()), [identity]).read() == data


def test_rewrap_refuses_a_corrupted_payload(tmp_path: Path, pq_identity: HybridIdentity) -> None:
    _, original = sealed_clip(pq_identity, 4 * CHUNK_SIZE)
    damaged = bytearray(original)
    damaged[-5] ^= 1
    source = tmp_path / "clip.age"
    source.write_bytes(bytes(damaged))
    with pytest.raises(AuthenticationError):
        rewrap_file(
            source, tmp_path / "shared.age", [pq_identity], [generate_identity().recipient()]
        )
    assert [p.name for p in tmp_path.iterdir()] == ["clip.age"]


def test_rewrap_needs_an_identity_that_opens_the_file(
    tmp_path: Path, pq_identity: HybridIdentity
) -> None:
    _, original = sealed_clip(pq_identity, 10)
    with pytest.raises(NoMatchError):
        rewrap(
            io.BytesIO(original),
            io.BytesIO(),
            [generate_identity()],
            [generate_identity().recipient()],
        )
