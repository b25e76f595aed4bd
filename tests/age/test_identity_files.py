"""Identity files: plain and passphrase-protected (an scrypt age file), written atomically."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from porchlight.age import (
    MalformedError,
    NoMatchError,
    PassphraseRequiredError,
    generate_identity,
    read_identity_file,
    write_identity_file,
)


def test_protected_identity_file_round_trip(tmp_path: Path) -> None:
    identity = generate_identity()
    path = tmp_path / "homeowner.key"
    # A low work factor keeps the test fast; the format is the same as the default 18.
    write_identity_file(path, identity, "porch light", work_factor=10)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_bytes()
    assert text.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    assert str(identity).encode() not in text
    (loaded,) = read_identity_file(path, "porch light")
    assert str(loaded) == str(identity)
    with pytest.raises(NoMatchError):
        read_identity_file(path, "wrong")
    with pytest.raises(PassphraseRequiredError):
        read_identity_file(path)
    assert [p.name for p in tmp_path.iterdir()] == ["homeowner.key"]


def test_plain_identity_file_with_several_keys(tmp_path: Path) -> None:
    first, second = generate_identity(), generate_identity("x25519")
    path = tmp_path / "keys.txt"
    write_identity_file(path, first, None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text(path.read_text() + f"\n# an old key\n{second}\n")
    loaded = read_identity_file(path)
    assert [str(i) for i in loaded] == [str(first), str(second)]


def test_garbage_identity_file_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "keys.txt"
    path.write_text("# nothing here\n")
    with pytest.raises(MalformedError, match="no identities"):
        read_identity_file(path)
