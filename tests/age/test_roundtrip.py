"""Round trips, chunk boundaries, random access and tamper rejection, against our own files."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from porchlight.age import (
    CHUNK_SIZE,
    AgeError,
    AuthenticationError,
    HybridIdentity,
    MalformedError,
    NoMatchError,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    decrypt_file,
    decryptor,
    encrypt_file,
    encryptor,
    generate_identity,
    parse_header,
    parse_identities,
    parse_recipient,
)

BOUNDARY_SIZES = [
    0,
    1,
    2,
    CHUNK_SIZE - 1,
    CHUNK_SIZE,
    CHUNK_SIZE + 1,
    2 * CHUNK_SIZE - 1,
    2 * CHUNK_SIZE,
    2 * CHUNK_SIZE + 1,
    3 * CHUNK_SIZE,
    16 * CHUNK_SIZE,
    16 * CHUNK_SIZE + 1,
    17 * CHUNK_SIZE - 1,
]


def seal(
    data: bytes,
    identity: X25519Identity | HybridIdentity,
    *,
    armor: bool = False,
    piece: int = 1 << 20,
) -> bytes:
    out = io.BytesIO()
    with encryptor(out, [identity.recipient()], armor=armor) as writer:
        for start in range(0, len(data), piece):
            writer.write(data[start : start + piece])
    return out.getvalue()


def open_all(sealed: bytes, identity: X25519Identity | HybridIdentity) -> bytes:
    return decryptor(io.BytesIO(sealed), [identity]).read()


def payload_size(plain: int) -> int:
    chunks = max(1, -(-plain // CHUNK_SIZE))
    return 16 + plain + 16 * chunks


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_round_trip_at_chunk_boundaries(size: int, x25519_identity: X25519Identity) -> None:
    data = os.urandom(size)
    sealed = seal(data, x25519_identity)
    header = parse_header(io.BytesIO(sealed))
    # The payload is exactly nonce + one tag per chunk; no empty trailing chunk.
    assert len(sealed) - header.payload_offset == payload_size(size)
    assert open_all(sealed, x25519_identity) == data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.sampled_from(BOUNDARY_SIZES) | st.integers(0, 4 * CHUNK_SIZE + 3),
    piece=st.integers(1, 3 * CHUNK_SIZE),
    armor=st.booleans(),
)
def test_round_trip_any_write_pattern(
    size: int, piece: int, armor: bool, x25519_identity: X25519Identity
) -> None:
    data = os.urandom(size)
    sealed = seal(data, x25519_identity, armor=armor, piece=piece)
    assert sealed.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----\n") == armor
    assert open_all(sealed, x25519_identity) == data


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_single_byte_flip_is_rejected(
    data: st.DataObject, x25519_identity: X25519Identity
) -> None:
    size = data.draw(st.sampled_from([0, 1, CHUNK_SIZE, CHUNK_SIZE + 1, 2 * CHUNK_SIZE + 5]))
    sealed = bytearray(seal(os.urandom(size), x25519_identity))
    position = data.draw(st.integers(0, len(sealed) - 1))
    sealed[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(AgeError):
        decryptor(io.BytesIO(bytes(sealed)), [x25519_identity]).read()


def test_flips_map_to_the_right_error(x25519_identity: X25519Identity) -> None:
    sealed = seal(os.urandom(3 * CHUNK_SIZE), x25519_identity)
    offset = parse_header(io.BytesIO(sealed)).payload_offset

    def flipped(position: int) -> bytes:
        copy = bytearray(sealed)
        copy[position] ^= 1
        return bytes(copy)

    with pytest.raises(MalformedError):  # the version line
        decryptor(io.BytesIO(flipped(0)), [x25519_identity])
    # Change one character of the MAC to another base64 letter (a flipped bit could make it
    # a character outside the alphabet, which is a malformed header, not a wrong MAC).
    wrong_mac = bytearray(sealed)
    wrong_mac[offset - 3] = ord("A") if wrong_mac[offset - 3] != ord("A") else ord("B")
    with pytest.raises(AuthenticationError, match="header MAC"):
        decryptor(io.BytesIO(bytes(wrong_mac)), [x25519_identity])
    with pytest.raises(AuthenticationError, match="chunk 1"):
        decryptor(io.BytesIO(flipped(offset + 16 + CHUNK_SIZE + 16 + 10)), [x25519_identity]).read()
    with pytest.raises(AuthenticationError, match="truncated"):
        decryptor(
            io.BytesIO(sealed[: offset + 16 + 2 * (CHUNK_SIZE + 16)]), [x25519_identity]
        ).read()


def test_post_quantum_is_the_default_and_round_trips(pq_identity: HybridIdentity) -> None:
    assert str(pq_identity).startswith("AGE-SECRET-KEY-PQ-1")
    assert str(pq_identity.recipient()).startswith("age1pq1")
    data = os.urandom(CHUNK_SIZE + 7)
    sealed = seal(data, pq_identity)
    assert b"-> mlkem768x25519 " in sealed[:4000]
    assert open_all(sealed, pq_identity) == data
    assert parse_recipient(str(pq_identity.recipient())) == pq_identity.recipient()
    again = parse_identities(f"# comment\n\n{pq_identity}\n")[0]
    assert again.recipient() == pq_identity.recipient()


def test_several_recipients_each_open(x25519_identity: X25519Identity) -> None:
    others = [generate_identity("x25519") for _ in range(3)]
    out = io.BytesIO()
    with encryptor(out, [x25519_identity.recipient(), *(o.recipient() for o in others)]) as w:
        w.write(b"shared clip")
    for identity in [x25519_identity, *others]:
        assert decryptor(io.BytesIO(out.getvalue()), [identity]).read() == b"shared clip"
    with pytest.raises(NoMatchError):
        decryptor(io.BytesIO(out.getvalue()), [generate_identity("x25519")])


def test_mixing_rules(x25519_identity: X25519Identity, pq_identity: HybridIdentity) -> None:
    with pytest.raises(AgeError, match="post-quantum"):
        encryptor(io.BytesIO(), [x25519_identity.recipient(), pq_identity.recipient()])
    with pytest.raises(AgeError, match="passphrase"):
        encryptor(io.BytesIO(), [ScryptRecipient("pw", 2), x25519_identity.recipient()])
    with pytest.raises(AgeError, match="no recipients"):
        encryptor(io.BytesIO(), [])


def test_scrypt_round_trip_and_wrong_passphrase() -> None:
    out = io.BytesIO()
    with encryptor(out, [ScryptRecipient("correct horse", work_factor=4)]) as writer:
        writer.write(b"x" * 70000)
    assert decryptor(io.BytesIO(out.getvalue()), [ScryptIdentity("correct horse")]).read() == (
        b"x" * 70000
    )
    with pytest.raises(NoMatchError, match="passphrase is wrong"):
        decryptor(io.BytesIO(out.getvalue()), [ScryptIdentity("battery staple")])


def test_exception_inside_with_block_leaves_an_unauthenticated_file(
    x25519_identity: X25519Identity,
) -> None:
    out = io.BytesIO()
    with pytest.raises(RuntimeError), encryptor(out, [x25519_identity.recipient()]) as writer:
        writer.write(os.urandom(100))
        raise RuntimeError("encoder crashed")
    # No final chunk was sealed, so the cut-short file cannot pass as complete.
    with pytest.raises(AuthenticationError):
        decryptor(io.BytesIO(out.getvalue()), [x25519_identity]).read()


class CountingReader(io.RawIOBase):
    """A seekable source that records how many bytes were read from it."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        buffer[: len(data)] = data
        self.bytes_read += len(data)
        return len(data)


def test_random_access_touches_only_the_needed_chunks(x25519_identity: X25519Identity) -> None:
    data = os.urandom(160 * CHUNK_SIZE + 1234)  # 10 MiB and a bit
    source = CountingReader(seal(data, x25519_identity))
    reader = decryptor(source, [x25519_identity])  # type: ignore[arg-type]
    assert reader.seekable()
    start = 100 * CHUNK_SIZE - 50  # straddles chunks 99 and 100
    before = source.bytes_read
    reader.seek(start)
    assert reader.read(100) == data[start : start + 100]
    assert source.bytes_read - before <= 2 * (CHUNK_SIZE + 16)
    assert reader.seek(0, io.SEEK_END) == len(data)
    reader.seek(-10, io.SEEK_END)
    assert reader.read() == data[-10:]
    reader.seek(5)
    assert reader.read(5) == data[5:10]
    reader.seek(len(data) + 100)
    assert reader.read(10) == b""
    assert source.bytes_read < 8 * (CHUNK_SIZE + 16) + 4096


def test_seek_from_end_authenticates_the_final_chunk(x25519_identity: X25519Identity) -> None:
    sealed = seal(os.urandom(3 * CHUNK_SIZE), x25519_identity)
    reader = decryptor(io.BytesIO(sealed[: -(CHUNK_SIZE + 16)]), [x25519_identity])
    # Cut at a chunk boundary: chunk 1 is now last but not sealed as final.
    with pytest.raises(AuthenticationError):
        reader.seek(0, io.SEEK_END)


@pytest.mark.parametrize(
    "size",
    [0, 1, CHUNK_SIZE, 16 * CHUNK_SIZE, 16 * CHUNK_SIZE + 1, 32 * CHUNK_SIZE, 40 * CHUNK_SIZE + 77],
)
def test_file_to_file_round_trip(
    size: int, tmp_path: Path, pq_identity: HybridIdentity, x25519_identity: X25519Identity
) -> None:
    plain = tmp_path / "clip.mp4"
    plain.write_bytes(os.urandom(size))
    sealed = tmp_path / "clip.mp4.age"
    encrypt_file(plain, sealed, [pq_identity.recipient()])
    # Same bytes as the streaming decryptor sees, and the same framing as the writer makes.
    assert decryptor(io.BytesIO(sealed.read_bytes()), [pq_identity]).read() == plain.read_bytes()
    back = tmp_path / "back.mp4"
    decrypt_file(sealed, back, [pq_identity])
    assert back.read_bytes() == plain.read_bytes()
    with pytest.raises(NoMatchError):
        decrypt_file(sealed, tmp_path / "nope", [x25519_identity])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.mp4", "clip.mp4", "clip.mp4.age"]


def test_decrypt_file_leaves_nothing_behind_on_failure(
    tmp_path: Path, x25519_identity: X25519Identity
) -> None:
    plain = tmp_path / "clip"
    plain.write_bytes(os.urandom(40 * CHUNK_SIZE))
    sealed = tmp_path / "clip.age"
    encrypt_file(plain, sealed, [x25519_identity.recipient()])
    damaged = bytearray(sealed.read_bytes())
    damaged[-100] ^= 0xFF  # the last chunk: everything before it decrypts fine
    sealed.write_bytes(bytes(damaged))
    with pytest.raises(AuthenticationError):
        decrypt_file(sealed, tmp_path / "out", [x25519_identity])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip", "clip.age"]


def test_armored_file_to_file(tmp_path: Path, x25519_identity: X25519Identity) -> None:
    plain = tmp_path / "note.txt"
    plain.write_bytes(b"hello\n" * 20000)
    sealed = tmp_path / "note.age"
    encrypt_file(plain, sealed, [x25519_identity.recipient()], armor=True)
    assert sealed.read_bytes().startswith(b"-----BEGIN AGE ENCRYPTED FILE-----\n")
    decrypt_file(sealed, tmp_path / "back", [x25519_identity])
    assert (tmp_path / "back").read_bytes() == plain.read_bytes()


def test_key_strings_reject_mistakes(x25519_identity: X25519Identity) -> None:
    text = str(x25519_identity.recipient())
    with pytest.raises(MalformedError, match="checksum"):
        parse_recipient(text[:-1] + ("q" if text[-1] != "q" else "p"))
    with pytest.raises(MalformedError):
        parse_recipient(text[:10] + text[10:].upper())
    with pytest.raises(MalformedError) as caught:
        parse_identities("# mine\nAGE-SECRET-KEY-1NOTAKEY\n")
    assert "line 2" in str(caught.value)
    assert "NOTAKEY" not in str(caught.value)


def test_an_abandoned_encryptor_is_never_sealed(x25519_identity: X25519Identity) -> None:
    out = io.BytesIO()
    writer = encryptor(out, [x25519_identity.recipient()])
    writer.write(b"first frames")
    assert writer.tell() == 12
    del writer  # dropped without close(), as after a crash outside a with block
    with pytest.raises(AuthenticationError):
        decryptor(io.BytesIO(out.getvalue()), [x25519_identity]).read()
