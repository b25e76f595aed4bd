"""The CCTV age test kit (c2sp.org/CCTV/age): every vector gives exactly its expected outcome."""

from __future__ import annotations

import hashlib
import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from porchlight.age import (
    AgeError,
    AuthenticationError,
    Identity,
    MalformedError,
    NoMatchError,
    ScryptIdentity,
    decryptor,
    parse_identity,
)
from tests import testdata as shared
from tests.testdata import require_testdata

VECTOR_DIR = shared.testdata_root() / "age"

# The kit's outcomes mapped onto our error family. "header failure" and "armor failure"
# both mean the file is not well formed; HMAC and payload failures are authentication.
EXPECTED_ERROR: dict[str, type[AgeError]] = {
    "header failure": MalformedError,
    "armor failure": MalformedError,
    "no match": NoMatchError,
    "HMAC failure": AuthenticationError,
    "payload failure": AuthenticationError,
}


@dataclass
class Vector:
    name: str
    expect: str
    payload_sha256: str | None
    identities: list[Identity]
    armored: bool
    body: bytes


def load_vector(path: Path) -> Vector:
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\n\n")
    fields: dict[str, list[str]] = {}
    for line in head.decode().splitlines():
        key, _, value = line.partition(": ")
        fields.setdefault(key, []).append(value)
    if fields.get("compressed") == ["zlib"]:
        body = zlib.decompress(body)
    identities: list[Identity] = [parse_identity(v) for v in fields.get("identity", [])]
    identities += [ScryptIdentity(v) for v in fields.get("passphrase", [])]
    return Vector(
        name=path.name,
        expect=fields["expect"][0],
        payload_sha256=fields.get("payload", [None])[0],
        identities=identities,
        armored=fields.get("armored") == ["yes"],
        body=body,
    )


def vector_names() -> list[str]:
    if not VECTOR_DIR.is_dir():
        return ["(missing)"]
    return sorted(p.name for p in VECTOR_DIR.iterdir() if p.name != "README.md.upstream")


def test_the_kit_has_all_143_vectors() -> None:
    require_testdata("age")
    assert len(vector_names()) == 143


def decrypt_streaming(vector: Vector, seekable: bool) -> tuple[bytes, AgeError | None]:
    """Decrypt chunk-sized reads, keeping what authenticated before any error."""
    source: io.BufferedIOBase = io.BytesIO(vector.body)
    if not seekable:
        source = io.BufferedReader(_Pipe(vector.body))
    out = bytearray()
    try:
        reader = decryptor(source, vector.identities)  # type: ignore[arg-type]
        while block := reader.read(64 * 1024):
            out += block
    except AgeError as error:
        return bytes(out), error
    return bytes(out), None


class _Pipe(io.RawIOBase):
    """A non-seekable source, like stdin from a pipe, that returns short reads."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        take = min(len(buffer), len(self._data), 1000)
        buffer[:take] = self._data[:take]
        self._data = self._data[take:]
        return take


@pytest.mark.parametrize("seekable", [True, False], ids=["seekable", "pipe"])
@pytest.mark.parametrize("name", vector_names())
def test_vector(name: str, seekable: bool) -> None:
    vector = load_vector(require_testdata("age", name))
    payload, error = decrypt_streaming(vector, seekable)
    if vector.expect == "success":
        assert error is None, f"{name}: unexpected {error!r}"
    else:
        expected = EXPECTED_ERROR[vector.expect]
        assert error is not None, f"{name}: decrypted, but expected {vector.expect}"
        assert type(error) is expected, f"{name}: {error!r}, expected {vector.expect}"
        assert str(error)
    if vector.payload_sha256 is not None and (vector.expect in ("success", "payload failure")):
        # The kit requires that what decrypted before a payload failure matches too.
        assert hashlib.sha256(payload).hexdigest() == vector.payload_sha256
