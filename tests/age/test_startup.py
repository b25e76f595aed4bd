"""Start-up of `porchlight keygen | encrypt | decrypt`: what a small job must not do.

Encrypting a small file is mostly interpreter start-up and imports, so the commands load
what only some jobs need where those jobs need it: the multi-process payload code (and
its dataclasses, inspect and ctypes) for files of 8 MiB or more, ML-KEM and HPKE for
post-quantum keys, scrypt for passphrases. pathlib, shutil, hashlib and hmac are not
imported at all, and a payload of one block skips the pipeline's threads and buffer
pools. No timing here: the tests run commands in fresh interpreters and look at the
modules they imported, or watch which code path a small file takes.

The interpreter runs with -S: site's own imports (an editable install's finder imports
pathlib) would otherwise hide what the command imports.
"""

from __future__ import annotations

import dataclasses
import io
import os
import site
import subprocess
import sys
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

import porchlight
from porchlight.age import (
    CHUNK_SIZE,
    AgeWriter,
    Header,
    Stanza,
    X25519Identity,
    decrypt_file,
    encrypt_file,
    generate_identity,
    parse_header,
)
from porchlight.age import files as age_files
from porchlight.age.files import spelled_as_pathlib
from porchlight.age.pipeline import BLOCK_CHUNKS
from porchlight.age.stream import payload_key
from porchlight.cli import build_parser, main

PROBE = """
import sys
before = set(sys.modules)
from porchlight.cli import main
try:
    code = main(sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as report:
        report.write("\\n".join(sorted(set(sys.modules) - before)))
sys.exit(code)
"""

# Never needed for a small file, a classic key, or help.
ALWAYS_UNNEEDED = {
    "porchlight.age.parallel",
    "ctypes",
    "dataclasses",
    "inspect",
    "shutil",
    "pathlib",
    "tempfile",
    "hashlib",
    "hmac",
    "getpass",
    "cryptography.hazmat.primitives.kdf.scrypt",
}
POST_QUANTUM = {
    "cryptography.hazmat.primitives.asymmetric.mlkem",
    "cryptography.hazmat.primitives.hpke",
}


def imported_by(tmp_path: Path, *args: str | Path) -> set[str]:
    """Run `porchlight args` in a fresh interpreter; the modules the command imported."""
    report = tmp_path / "modules.txt"
    repo = Path(porchlight.__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(repo), *site.getsitepackages()])
    env.pop("PYTHONSTARTUP", None)
    done = subprocess.run(
        [sys.executable, "-S", "-c", PROBE, str(report), *map(str, args)],
        capture_output=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    return set(report.read_text().split())


@pytest.fixture()
def classic_files(tmp_path: Path) -> dict[str, Path | str]:
    identity = generate_identity("x25519")
    key = tmp_path / "classic.key"
    key.write_text(f"{identity}\n")
    plain = tmp_path / "clip.bin"
    plain.write_bytes(os.urandom(1000))
    return {"key": key, "recipient": str(identity.recipient()), "plain": plain}


def test_small_file_encrypt_and_decrypt_import_only_what_they_use(
    tmp_path: Path, classic_files: dict[str, Path | str]
) -> None:
    sealed = tmp_path / "clip.age"
    opened = tmp_path / "clip.out"
    recipient, plain = classic_files["recipient"], classic_files["plain"]
    encrypt = imported_by(tmp_path, "encrypt", "-r", recipient, "-o", sealed, plain)
    decrypt = imported_by(tmp_path, "decrypt", "-i", classic_files["key"], "-o", opened, sealed)
    assert opened.read_bytes() == Path(plain).read_bytes()
    for loaded in (encrypt, decrypt):
        assert "porchlight.age.files" in loaded  # the probe saw the command's imports
        assert loaded & (ALWAYS_UNNEEDED | POST_QUANTUM) == set()


def test_keygen_and_help_import_only_what_they_use(tmp_path: Path) -> None:
    keygen = imported_by(tmp_path, "keygen", "-o", tmp_path / "pq.key")
    assert "cryptography.hazmat.primitives.asymmetric.mlkem" in keygen
    assert keygen & ALWAYS_UNNEEDED == set()
    help_ = imported_by(tmp_path, "--help")
    assert "argparse" in help_
    assert help_ & (ALWAYS_UNNEEDED | {"typing", "porchlight.age"}) == set()


def test_only_the_named_age_command_gets_a_parser() -> None:
    """`porchlight encrypt` builds the encrypt parser; the others are only listed."""
    parser = build_parser(["encrypt"])
    assert parser.parse_args(["encrypt", "-r", "age1x"]).handler.__name__ == "_encrypt"
    named = {"keygen": ["keygen"], "decrypt": ["decrypt"], "rewrap": ["rewrap", "-i", "k", "in"]}
    for other, argv in named.items():
        assert not hasattr(parser.parse_args([other]), "handler")
        assert build_parser(argv).parse_args(argv).handler.__name__ == f"_{other}"


def test_help_lists_the_commands_alike_whichever_command_follows_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    shown = []
    for argv in (["--help"], ["-h", "encrypt"], ["-h", "rewrap"]):
        with pytest.raises(SystemExit):
            main(argv)
        shown.append(capsys.readouterr().out)
    assert "rewrap" in shown[0]
    assert shown[1:] == [shown[0]] * 2


ONE_BLOCK = BLOCK_CHUNKS * CHUNK_SIZE


@pytest.mark.parametrize("size", [0, 1, CHUNK_SIZE, ONE_BLOCK - 1, ONE_BLOCK, ONE_BLOCK + 1])
def test_a_payload_of_one_block_skips_the_pipeline_with_the_same_bytes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    x25519_identity: X25519Identity,
    size: int,
) -> None:
    pipelined: list[int] = []
    run_pipeline = age_files.run_pipeline

    def spy(*args: object, **kwargs: object) -> None:
        pipelined.append(size)
        run_pipeline(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(age_files, "run_pipeline", spy)
    data = os.urandom(size)
    plain = tmp_path / "plain"
    plain.write_bytes(data)
    file_key, nonce = os.urandom(16), os.urandom(16)
    draws = iter([file_key, nonce])
    sealed = tmp_path / "sealed.age"
    sealing: list[int] = []
    encrypt_file(
        plain,
        sealed,
        [x25519_identity.recipient()],
        randbytes=lambda _: next(draws),
        progress=sealing.append,
    )
    expected = io.BytesIO()
    with AgeWriter(expected, payload_key(file_key, nonce)) as writer:
        writer.write(data)
    with open(sealed, "rb") as handle:
        parse_header(handle)
        start = handle.tell()
        assert handle.read() == nonce + expected.getvalue()
    opening: list[int] = []
    back = tmp_path / "back"
    decrypt_file(sealed, back, [x25519_identity], progress=opening.append)
    assert back.read_bytes() == data
    assert sealing[-1] == size
    assert opening[-1] == sealed.stat().st_size - start - len(nonce)
    assert pipelined == ([size, size] if size > ONE_BLOCK else [])


@given(st.text(alphabet="/.ab", max_size=12))
def test_paths_are_spelled_as_pathlib_spells_them(path: str) -> None:
    assert spelled_as_pathlib(path) == str(PurePosixPath(path))


@dataclasses.dataclass(frozen=True)
class _DataclassStanza:
    type: str
    args: tuple[str, ...]
    body: bytes


def test_stanza_and_header_behave_as_the_frozen_dataclasses_they_were() -> None:
    stanza = Stanza("X25519", ("c2hhcmU",), b"\x00body")
    reference = _DataclassStanza("X25519", ("c2hhcmU",), b"\x00body")
    assert repr(stanza) == repr(reference).replace("_DataclassStanza", "Stanza")
    assert hash(stanza) == hash(reference)
    assert stanza == Stanza(type="X25519", args=("c2hhcmU",), body=b"\x00body")
    assert stanza != Stanza("X25519", ("c2hhcmU",), b"other")
    assert stanza != reference
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'body'"):
        stanza.body = b""  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot delete field 'type'"):
        del stanza.type  # type: ignore[misc]
    header = Header((stanza,), b"m" * 32, b"input", 7)
    assert repr(header) == (
        f"Header(stanzas=({stanza!r},), mac={b'm' * 32!r}, mac_input=b'input', payload_offset=7)"
    )
    assert {header, Header((stanza,), b"m" * 32, b"input", 7)} == {header}
    match header:
        case Header(stanzas, _, _, offset):
            assert (stanzas, offset) == ((stanza,), 7)
