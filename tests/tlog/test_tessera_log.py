"""`porchlight audit verify --dir` on the real Tessera log: every checkpoint is accepted, and
any one changed byte of a tile, an entry bundle or a checkpoint is rejected."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from porchlight.cli import main
from porchlight.tlog.note import generate_signer
from porchlight.tlog.verify import DirectorySource, VerifyError, verify_log
from tests.testdata import require_testdata
from tests.tlog.logs import TESSERA_VKEY


@pytest.fixture
def tessera(tmp_path: Path) -> Path:
    copy = tmp_path / "log"
    shutil.copytree(require_testdata("tlog", "tessera-testdata-log"), copy)
    return copy


def _verify(log: Path, state: Path, checkpoint: Path | None = None) -> int:
    args = ["audit", "verify", "--dir", str(log), "--key", TESSERA_VKEY, "--state", str(state)]
    if checkpoint is not None:
        args += ["--checkpoint", str(checkpoint)]
    return main(args)


def test_every_checkpoint_verifies_in_order(
    tessera: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.json"
    for size in range(16):
        assert _verify(tessera, state, tessera / f"checkpoint.{size}") == 0
        out = capsys.readouterr().out
        assert f"verified example.com/log/testdata: size {size}, root " in out
    assert _verify(tessera, state) == 0
    assert "rKbDipCvhuX1GZ7g5BBe8sA6BbJ7ja/1nk427v383cs=" in capsys.readouterr().out
    # An archived, older checkpoint is checked against the saved state too.
    assert _verify(tessera, state, tessera / "checkpoint.7") == 0
    assert "consistent with size 15" in capsys.readouterr().out


def test_the_current_checkpoint_may_not_roll_back(
    tessera: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.json"
    assert _verify(tessera, state) == 0
    shutil.copy(tessera / "checkpoint.9", tessera / "checkpoint")
    assert _verify(tessera, state) != 0
    assert "rolled back" in capsys.readouterr().err


def test_origin_is_the_key_name(
    tessera: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Tessera names its key after the log's origin, so no --origin is needed; expecting
    # another origin is refused.
    assert TESSERA_VKEY.split("+")[0] == "example.com/log/testdata"
    assert (tessera / "checkpoint").read_text().startswith("example.com/log/testdata\n")
    state = tmp_path / "state.json"
    args = ["audit", "verify", "--dir", str(tessera), "--key", TESSERA_VKEY, "--state", str(state)]
    assert main([*args, "--origin", "example.com/log/other"]) != 0
    err = capsys.readouterr().err
    assert "checkpoint is for log 'example.com/log/testdata', not 'example.com/log/other'" in err
    assert not state.exists()
    assert main([*args, "--origin", "example.com/log/testdata"]) == 0


def test_wrong_or_malformed_key_is_rejected(
    tessera: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = str(tmp_path / "state.json")
    other = generate_signer("example.com/log/testdata").verifier().vkey()
    assert main(["audit", "verify", "--dir", str(tessera), "--key", other, "--state", state]) != 0
    assert "no signature from a known key" in capsys.readouterr().err
    bad = TESSERA_VKEY.replace("+33d7b496+", "+33d7b497+")
    assert main(["audit", "verify", "--dir", str(tessera), "--key", bad, "--state", state]) != 0
    assert "bad verifier key" in capsys.readouterr().err
    assert not Path(state).exists()


def _tamper_targets(log: Path) -> list[tuple[Path, Path]]:
    """(file to change, checkpoint that depends on it), for every file of the log."""
    targets = []
    for path in sorted(log.rglob("*")):
        relative = path.relative_to(log).as_posix()
        if not path.is_file() or relative.startswith("LICENSE"):
            continue
        if relative.startswith("tile/"):
            width = relative.rsplit("/", 1)[1]
            targets.append((path, log / f"checkpoint.{width}"))
        else:
            targets.append((path, path))
    return targets


def test_any_changed_byte_is_rejected(
    tessera: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = random.Random(4)
    targets = _tamper_targets(tessera)
    assert len(targets) == 17 + 15 + 15
    checked = 0
    for path, checkpoint in targets:
        original = path.read_bytes()
        positions = {
            0,
            len(original) - 1,
            *rng.sample(range(len(original)), min(10, len(original))),
        }
        for position in sorted(positions):
            changed = bytearray(original)
            changed[position] ^= rng.randrange(1, 256)
            path.write_bytes(bytes(changed))
            state = tmp_path / f"state-{checked}.json"
            code = _verify(tessera, state, None if path.name == "checkpoint" else checkpoint)
            err = capsys.readouterr().err
            assert code != 0, f"{path.relative_to(tessera)} byte {position} went unnoticed"
            assert "porchlight: error: log verification failed" in err
            assert not state.exists()
            checked += 1
        path.write_bytes(original)
    assert checked >= 47 * 5


def test_every_byte_of_the_latest_files_is_covered(tessera: Path) -> None:
    # Exhaustive for the files the current checkpoint depends on (in-process, no CLI).
    source = DirectorySource(tessera)
    for relative in ("checkpoint", "tile/0/000.p/15", "tile/entries/000.p/15"):
        path = tessera / relative
        original = path.read_bytes()
        for position in range(len(original)):
            for mask in (0x01, 0x80):
                changed = bytearray(original)
                changed[position] ^= mask
                path.write_bytes(bytes(changed))
                with pytest.raises(VerifyError):
                    verify_log(source, TESSERA_VKEY)
        path.write_bytes(original)
    verify_log(source, TESSERA_VKEY)


def test_named_errors(tessera: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tessera / "tile/entries/000.p/15"
    data = bytearray(bundle.read_bytes())
    data[data.index(b"seven")] ^= 0x20  # "Seven": entry 6
    bundle.write_bytes(bytes(data))
    assert _verify(tessera, tmp_path / "a.json") != 0
    assert "entry 6 does not match" in capsys.readouterr().err
    shutil.copytree(require_testdata("tlog", "tessera-testdata-log"), tessera, dirs_exist_ok=True)

    tile = tessera / "tile/0/000.p/15"
    data = bytearray(tile.read_bytes())
    data[32 * 9 + 5] ^= 1
    tile.write_bytes(bytes(data))
    assert _verify(tessera, tmp_path / "b.json") != 0
    err = capsys.readouterr().err
    assert "tile tile/0/000.p/15 is corrupt" in err
    assert "entry 9" in err
    shutil.copytree(require_testdata("tlog", "tessera-testdata-log"), tessera, dirs_exist_ok=True)

    checkpoint = tessera / "checkpoint"
    checkpoint.write_text(checkpoint.read_text().replace("\n15\n", "\n14\n"))
    assert _verify(tessera, tmp_path / "c.json") != 0
    assert "checkpoint: invalid signature" in capsys.readouterr().err
