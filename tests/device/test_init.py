"""`device init` never replaces what an earlier setup left (the homeowner identity, maybe
the only key to the clips; the device key; clips), and refuses bad directories and options
with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from device.keys import DEVICE_KEY_NAME, create_device_key, load_device_key
from porchlight.age import generate_identity, read_identity_file
from porchlight.cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["device", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_init_never_replaces_an_identity_key_or_clips(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "pass"
    secret.write_text("correct horse\n")
    home = tmp_path / "pi"
    init = ["init", "--data-dir", str(home), "--passphrase-file", str(secret), "--classic"]
    assert run(capsys, *init)[0] == 0
    identity = (home / "homeowner-identity.age").read_bytes()
    key = (home / DEVICE_KEY_NAME).read_bytes()
    (home / "config.toml").unlink()  # lost; the identity is the only key to the clips
    code, _, err = run(capsys, *init)
    assert code == 1
    assert "holds a homeowner identity" in err and "init never replaces it" in err
    assert "restore config.toml" in err
    assert (home / "homeowner-identity.age").read_bytes() == identity
    assert (home / DEVICE_KEY_NAME).read_bytes() == key
    assert not (home / "config.toml").exists()

    # Identity kept off the Pi: clips and no config refuse a fresh --recipient setup too.
    other = tmp_path / "other"
    assert run(capsys, "init", "--recipient", str(generate_identity("x25519").recipient()),
               "--data-dir", str(other))[0] == 0  # fmt: skip
    (other / "clips").mkdir()
    (other / "clips" / "20260301T000000Z-abcdef.age").write_bytes(b"age")
    (other / "config.toml").unlink()
    fresh = str(generate_identity("x25519").recipient())
    code, _, err = run(capsys, "init", "--recipient", fresh, "--data-dir", str(other))
    assert code == 1 and "holds 1 clip files of an earlier setup" in err
    assert not (other / "config.toml").exists()


def test_init_keeps_a_key_made_by_an_earlier_enroll(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "pi"
    home.mkdir()
    key = create_device_key(home)
    recipient = str(generate_identity("x25519").recipient())
    assert run(capsys, "init", "--recipient", recipient, "--data-dir", str(home))[0] == 0
    assert load_device_key(home).public_key() == key.public_key()


def test_identity_file_is_created_exclusively(tmp_path: Path) -> None:
    """Even when a second init passes the checks at the same moment, linking the new identity
    into place fails rather than replacing the first one's."""
    from device.cli import _write_new_identity

    path = tmp_path / "homeowner-identity.age"
    path.write_bytes(b"the first init's identity")
    with pytest.raises(FileExistsError):
        _write_new_identity(path, generate_identity("x25519"), None)
    assert path.read_bytes() == b"the first init's identity"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no staging file left
    fresh = tmp_path / "fresh.age"
    _write_new_identity(fresh, generate_identity("x25519"), None)
    assert read_identity_file(fresh)
    assert fresh.stat().st_mode & 0o777 == 0o600


def test_init_rejects_bad_directories_and_option_mixes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipient = str(generate_identity("x25519").recipient())
    secret = tmp_path / "pass"
    secret.write_text("pw\n")
    a_file = tmp_path / "afile"
    a_file.write_text("")
    for argv, message in (
        (["--data-dir", str(a_file), "--recipient", recipient], "is not a directory"),
        (["--data-dir", str(a_file / "sub"), "--recipient", recipient], "cannot create"),
        (
            ["--data-dir", str(tmp_path / "x"), "--recipient", recipient,
             "--passphrase-file", str(secret)],
            "--passphrase-file and --classic are for an identity generated here",
        ),
        (
            ["--data-dir", str(tmp_path / "x"), "--recipient", recipient, "--classic"],
            "with --recipient none is generated",
        ),
    ):  # fmt: skip
        code, _, err = run(capsys, "init", *argv)
        assert code == 1, argv
        assert "porchlight: error: " in err and message in err, (argv, err)
    assert not (tmp_path / "x").exists()


def test_init_help_warns_about_the_passphrase(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["device", "init", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "asks for a passphrase" in text
    assert "every clip is unreadable" in text
    assert "(not with --recipient)" in text
