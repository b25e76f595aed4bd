"""A synthetic log of 1,300 entries, built with the production tiles code, tampered with the
ways a server's operator could: each is detected and the first bad entry, or the
inconsistent checkpoint, is named."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from porchlight.cli import main
from porchlight.tlog.checkpoint import Checkpoint, add_signatures, cosign, sign_checkpoint
from porchlight.tlog.merkle import root
from porchlight.tlog.note import ALG_COSIGNATURE_V1, CosignatureSigner, generate_signer
from porchlight.tlog.tiles import Tile, leaf_hashes
from porchlight.tlog.verify import (
    DirectorySource,
    VerifiedState,
    VerifyError,
    WrongOrigin,
    load_state,
    verify_log,
)
from tests.tlog.logs import (
    ORIGIN,
    add_tiles,
    build_log,
    entry,
    sign,
    signer,
    write_bundles_only,
    write_tiles,
)

SIZE = 1300
VKEY = signer().verifier().vkey()


@pytest.fixture
def entries() -> list[bytes]:
    return [entry(i) for i in range(SIZE)]


@pytest.fixture
def log(tmp_path: Path, entries: list[bytes]) -> Path:
    directory = tmp_path / "log"
    build_log(directory, entries)
    return directory


def _verified(log: Path) -> VerifiedState:
    return verify_log(DirectorySource(log), VKEY).state


def _first_bad_entry(log: Path, previous: VerifiedState | None = None) -> VerifyError:
    with pytest.raises(VerifyError) as caught:
        verify_log(DirectorySource(log), VKEY, previous=previous)
    return caught.value


def test_untouched_log_verifies_with_upper_tiles(log: Path) -> None:
    state = _verified(log)
    assert state.size == SIZE
    assert (log / Tile(1, 0, SIZE // 256).path()).exists()
    assert len(state.block_hashes) == SIZE // 256
    assert len(state.tail_leaf_hashes) == SIZE % 256


def _change_byte(entries: list[bytes]) -> tuple[list[bytes], int]:
    changed = list(entries)
    target = 777
    data = bytearray(changed[target])
    data[10] ^= 0x01
    changed[target] = bytes(data)
    return changed, target


def _delete(entries: list[bytes]) -> tuple[list[bytes], int]:
    return entries[:500] + entries[501:], 500


def _swap(entries: list[bytes]) -> tuple[list[bytes], int]:
    swapped = list(entries)
    swapped[300], swapped[1100] = swapped[1100], swapped[300]
    return swapped, 300


def _insert(entries: list[bytes]) -> tuple[list[bytes], int]:
    return [*entries[:1290], b'{"action":"request.file","index":1290}', *entries[1290:]], 1290


TAMPERS: dict[str, Callable[[list[bytes]], tuple[list[bytes], int]]] = {
    "change one byte": _change_byte,
    "delete one": _delete,
    "swap two": _swap,
    "insert one": _insert,
}


def _served(how: str, entries: list[bytes]) -> tuple[list[bytes], int]:
    """The first SIZE entries a tampered database serves, and the first tampered index.

    The checkpoint still says SIZE, so that is what is served: after a deletion the next
    appended entry fills the gap, after an insertion the last entry is pushed beyond it."""
    tampered, first_bad = TAMPERS[how](entries)
    later = [entry(i) for i in range(SIZE, SIZE + 2)]
    return [*tampered, *later][:SIZE], first_bad


@pytest.mark.parametrize("how", TAMPERS)
def test_database_tampering_names_the_first_bad_entry(
    how: str, log: Path, entries: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The entries change but the stored tree hashes (tiles) and the signed checkpoint do not.
    tampered, first_bad = _served(how, entries)
    write_bundles_only(log, tampered)
    error = _first_bad_entry(log)
    assert error.entry == first_bad
    state = tmp_path / "state.json"
    code = main(["audit", "verify", "--dir", str(log), "--key", VKEY, "--state", str(state)])
    assert code != 0
    assert f"entry {first_bad} does not match" in capsys.readouterr().err
    assert not state.exists()


@pytest.mark.parametrize("how", TAMPERS)
def test_tampering_with_tiles_recomputed_is_caught_by_the_signed_root(
    how: str, log: Path, entries: list[bytes]
) -> None:
    # A more careful operator also recomputes every tile, but cannot re-sign the old checkpoint.
    previous = _verified(log)
    tampered, first_bad = _served(how, entries)
    write_tiles(log, tampered)
    error = _first_bad_entry(log)
    assert error.path == "checkpoint"
    assert "does not match the root recomputed" in error.message
    # With the state of an earlier verification, the divergence is located.
    located = _first_bad_entry(log, previous)
    block = first_bad // 256 * 256
    if first_bad >= SIZE // 256 * 256:
        assert f"first differing entry is {first_bad}" in located.message
    else:
        assert f"first differing entry is in {block}..{block + 255}" in located.message


def test_fork_rewritten_and_resigned_is_detected_by_the_state(
    log: Path, entries: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.json"
    args = ["audit", "verify", "--dir", str(log), "--key", VKEY, "--state", str(state)]
    assert main(args) == 0
    before = state.read_text()
    # The operator rewrites the tail from entry 1290, appends, and signs with the log's own key.
    forked = [*entries[:1290], *(b"rewritten %d" % i for i in range(1290, SIZE + 40))]
    write_tiles(log, forked)
    sign(log, forked)
    # On its own, the fork is a perfectly valid log ...
    assert verify_log(DirectorySource(log), VKEY).checkpoint.size == SIZE + 40
    # ... but not one consistent with what this auditor verified before.
    assert main(args) != 0
    err = capsys.readouterr().err
    assert f"checkpoint (size {SIZE + 40}" in err
    assert f"inconsistent with the checkpoint verified before (size {SIZE}" in err
    assert "first differing entry is 1290" in err
    assert state.read_text() == before


def test_fork_deep_in_history_names_the_block(log: Path, entries: list[bytes]) -> None:
    previous = _verified(log)
    forked = [*entries[:600], b"rewritten", *entries[601:], b"more"]
    write_tiles(log, forked)
    sign(log, forked)
    error = _first_bad_entry(log, previous)
    assert "inconsistent with the checkpoint verified before" in error.message
    assert "first differing entry is in 512..767" in error.message


def test_honest_growth_is_consistent(log: Path, entries: list[bytes], tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    args = ["audit", "verify", "--dir", str(log), "--key", VKEY, "--state", str(state)]
    assert main(args) == 0
    grown = [*entries, *(entry(i) for i in range(SIZE, SIZE + 300))]
    write_tiles(log, grown)
    sign(log, grown)
    assert main(args) == 0
    saved = load_state(state)
    assert saved is not None and saved.size == SIZE + 300


def test_rollback_to_an_older_signed_checkpoint_is_detected(
    log: Path, entries: list[bytes]
) -> None:
    previous = _verified(log)
    sign(log, entries[:1000])
    error = _first_bad_entry(log, previous)
    assert "rolled back" in error.message


def test_a_checkpoint_signed_by_another_key_is_rejected(log: Path, entries: list[bytes]) -> None:
    impostor = generate_signer(ORIGIN)
    checkpoint = Checkpoint(ORIGIN, SIZE, b"\x00" * 32)
    (log / "checkpoint").write_text(sign_checkpoint(checkpoint, impostor))
    error = _first_bad_entry(log)
    assert error.path == "checkpoint"
    assert "no signature from a known key" in error.message


def test_corrupt_upper_tile_is_named(log: Path) -> None:
    tile = log / Tile(1, 0, SIZE // 256).path()
    data = bytearray(tile.read_bytes())
    data[40] ^= 0x04
    tile.write_bytes(bytes(data))
    error = _first_bad_entry(log)
    assert error.path == "tile/1/000.p/5"
    assert "does not match the tree recomputed" in error.message


def test_missing_bundle_names_its_first_entry(log: Path) -> None:
    (log / Tile(None, 2).path()).unlink()
    error = _first_bad_entry(log)
    assert error.entry == 512
    assert "missing" in error.message


def test_partial_tiles_replaced_by_full_ones_still_verify(log: Path, entries: list[bytes]) -> None:
    # tlog-tiles: once a tile fills up, a log may serve only the full tile.
    state_at_1300 = _verified(log)
    grown = [*entries, *(entry(i) for i in range(SIZE, 1536))]
    add_tiles(log, grown)
    # tile/0/005 and tile/entries/005 are now full: drop the partial ones they replace.
    for level in (0, None):
        (log / Tile(level, 5, SIZE % 256).path()).unlink()
        assert (log / Tile(level, 5).path()).exists()
    assert verify_log(DirectorySource(log), VKEY).checkpoint.size == SIZE
    sign(log, grown)
    assert verify_log(DirectorySource(log), VKEY, previous=state_at_1300).checkpoint.size == 1536


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    size=st.integers(min_value=1, max_value=600),
    where=st.floats(min_value=0, max_value=1, exclude_max=True),
    byte=st.integers(min_value=0, max_value=10_000),
    mask=st.integers(min_value=1, max_value=255),
)
def test_any_changed_entry_byte_is_named(
    tmp_path: Path, size: int, where: float, byte: int, mask: int
) -> None:
    directory = tmp_path / f"log-{size}-{byte}-{mask}"
    entries = [entry(i) for i in range(size)]
    build_log(directory, entries)
    target = int(where * size)
    changed = bytearray(entries[target])
    changed[byte % len(changed)] ^= mask
    entries[target] = bytes(changed)
    write_bundles_only(directory, entries)
    assert _first_bad_entry(directory).entry == target


def test_same_size_equivocation_is_detected(log: Path, entries: list[bytes]) -> None:
    # Two different trees of the same size, both signed: the second view is named.
    previous = _verified(log)
    other = list(entries)
    other[SIZE - 3] = b"a different history"
    write_tiles(log, other)
    sign(log, other)
    assert verify_log(DirectorySource(log), VKEY).checkpoint.size == SIZE
    error = _first_bad_entry(log, previous)
    assert error.path == "checkpoint"
    assert f"inconsistent with the checkpoint verified before (size {SIZE}" in error.message
    assert f"first differing entry is {SIZE - 3}" in error.message


def _older(tmp_path: Path, name: str, entries: list[bytes]) -> Path:
    """A copy of a log of `entries` alone, with its own signed checkpoint."""
    directory = tmp_path / name
    build_log(directory, entries)
    return directory


def _verify_older(log: Path, state: Path, older: Path) -> int:
    args = ["audit", "verify", "--dir", str(log), "--key", VKEY, "--state", str(state)]
    return main([*args, "--checkpoint", str(older / "checkpoint")])


def test_older_fork_at_a_partial_block_is_never_accepted(
    log: Path, entries: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Verified at 1300; then a checkpoint of size 700, re-signed with the log's key, whose
    # entries 600..699 differ: block 2 (512..767) is only a hash in the state file.
    state = tmp_path / "state.json"
    assert main(["audit", "verify", "--dir", str(log), "--key", VKEY, "--state", str(state)]) == 0
    before = state.read_text()
    forked = [*entries[:600], *(b"forked %d" % i for i in range(600, 700))]
    fork = _older(tmp_path, "fork", forked)
    # Served on its own, nothing holds block 2 of the history verified before: refused.
    assert _verify_older(fork, state, fork) != 0
    err = capsys.readouterr().err
    assert "cannot check checkpoint (size 700) against the checkpoint verified before" in err
    assert "keeps entries 512..767 only as one hash" in err
    # Beside the honest level-0 tile of block 2 (which hashes to what the state kept), the
    # fork is named at its first differing entry.
    (fork / "tile/0/002").write_bytes((log / "tile/0/002").read_bytes())
    assert _verify_older(fork, state, fork) != 0
    err = capsys.readouterr().err
    assert "inconsistent with the checkpoint verified before (size 1300" in err
    assert "first differing entry is 600" in err
    # A full tile that does not hash to the kept block hash is not believed.
    (fork / "tile/0/002").write_bytes(bytes(32 * 256))
    assert _verify_older(fork, state, fork) != 0
    assert "cannot check checkpoint (size 700)" in capsys.readouterr().err
    # Within the first block too (nothing of block 0 but its hash is kept).
    small = _older(tmp_path, "fork200", [*entries[:150], *(b"f %d" % i for i in range(150, 200))])
    assert _verify_older(small, state, small) != 0
    assert "cannot check checkpoint (size 200)" in capsys.readouterr().err
    assert state.read_text() == before


def test_older_fork_at_a_block_boundary_is_inconsistent(
    log: Path, entries: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state.json"
    assert main(["audit", "verify", "--dir", str(log), "--key", VKEY, "--state", str(state)]) == 0
    forked = [*entries[:700], b"forked", *entries[701:768]]
    fork = _older(tmp_path, "fork", forked)
    assert _verify_older(fork, state, fork) != 0
    err = capsys.readouterr().err
    assert "checkpoint (size 768" in err and "inconsistent" in err
    assert "first differing entry is in 512..767" in err


def test_older_fork_in_the_state_tail_is_inconsistent(log: Path, entries: list[bytes]) -> None:
    previous = _verified(log)
    forked = [*entries[:1285], *(b"forked %d" % i for i in range(1285, 1290))]
    sign(log, forked, "forked")
    write_tiles(log, forked)
    with pytest.raises(VerifyError, match="first differing entry is 1285"):
        verify_log(
            DirectorySource(log),
            VKEY,
            checkpoint_text=(log / "forked").read_bytes(),
            previous=previous,
            allow_older=True,
        )


@pytest.mark.parametrize("size", [200, 256, 700, 1024, 1290])
def test_honest_older_checkpoint_is_accepted(
    size: int, log: Path, entries: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An archived checkpoint of the same history, checked against the log it came from
    # (grown since: it holds every complete block, and, as an append-only log keeps them,
    # the partial tiles of that size), is consistent and leaves the state alone.
    state = tmp_path / "state.json"
    assert main(["audit", "verify", "--dir", str(log), "--key", VKEY, "--state", str(state)]) == 0
    before = state.read_text()
    add_tiles(log, entries[:size])
    sign(log, entries[:size], "checkpoint.old")
    args = ["audit", "verify", "--dir", str(log), "--key", VKEY, "--state", str(state)]
    assert main([*args, "--checkpoint", str(log / "checkpoint.old")]) == 0
    assert f"size {size}, root " in capsys.readouterr().out
    assert state.read_text() == before
    # A copy of the log as it was at that size: checkable when it ends on a block boundary
    # or within the state's tail (whose leaf hashes the state kept); otherwise it lacks the
    # complete block its last entries belong to, and is refused, and said so, rather than
    # accepted unchecked.
    copy = _older(tmp_path, "copy", entries[:size])
    assert (copy / "checkpoint").read_text() == (log / "checkpoint.old").read_text()
    if size % 256 == 0 or size >= SIZE // 256 * 256:
        assert _verify_older(copy, state, copy) == 0
        assert f"consistent with size {SIZE} verified before" in capsys.readouterr().out
    else:
        assert _verify_older(copy, state, copy) != 0
        assert f"cannot check checkpoint (size {size})" in capsys.readouterr().err
    assert state.read_text() == before


def _sign_for(log: Path, entries: list[bytes], origin: str) -> None:
    """Sign a checkpoint over `entries` for log `origin`, with the key named ORIGIN."""
    checkpoint = Checkpoint(origin, len(entries), root(leaf_hashes(entries)))
    (log / "checkpoint").write_text(sign_checkpoint(checkpoint, signer()))


def test_checkpoint_for_another_log_is_rejected_on_a_first_run(
    log: Path, entries: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A key may sign for several logs: a validly signed checkpoint of another one is not
    # this log's, even when there is no state file yet to compare its origin with.
    _sign_for(log, entries, "some.other/log")
    state = tmp_path / "state.json"
    args = ["audit", "verify", "--dir", str(log), "--key", VKEY, "--state", str(state)]
    assert main(args) != 0
    err = capsys.readouterr().err
    assert (
        f"checkpoint is for log 'some.other/log', not '{ORIGIN}' (the verifier key's name)" in err
    )
    assert "pass --origin" in err
    assert not state.exists()
    with pytest.raises(WrongOrigin):
        verify_log(DirectorySource(log), VKEY)
    # Expected explicitly, it verifies; and then the key's own origin is the wrong one.
    assert main([*args, "--origin", "some.other/log"]) == 0
    assert "verified some.other/log: size 1300" in capsys.readouterr().out
    sign(log, entries)
    assert main([*args, "--origin", "some.other/log"]) != 0
    assert f"checkpoint is for log '{ORIGIN}', not 'some.other/log' (expected)" in (
        capsys.readouterr().err
    )


def test_a_missing_cosignature_leaves_the_state_untouched(
    log: Path, entries: list[bytes], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    witness = generate_signer("witness.test/w", ALG_COSIGNATURE_V1)
    assert isinstance(witness, CosignatureSigner)
    state = tmp_path / "state.json"
    args = ["audit", "verify", "--dir", str(log), "--key", VKEY, "--state", str(state)]
    required = ["--witness", witness.verifier().vkey()]
    # A first run whose checkpoint lacks the cosignature saves no state ...
    assert main([*args, *required]) != 0
    assert "checkpoint is not cosigned by witness.test/w" in capsys.readouterr().err
    assert not state.exists()
    # ... and a later one keeps the state of the last run that passed.
    assert main(args) == 0
    before = state.read_text()
    grown = [*entries, *(entry(i) for i in range(SIZE, SIZE + 10))]
    write_tiles(log, grown)
    text = sign(log, grown)
    assert main([*args, *required]) != 0
    assert state.read_text() == before
    (log / "checkpoint").write_text(add_signatures(text, [cosign(text, witness)]))
    assert main([*args, *required]) == 0
    saved = load_state(state)
    assert saved is not None and saved.size == SIZE + 10


_HUGE_SIZE_RUN = """
import resource, sys
# 1 GiB of address space: the whole verifier fits many times over; a list of 2**54 tiles
# (or of any sizeable fraction of them) does not.
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from porchlight.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_huge_signed_size_stops_at_the_first_missing_bundle(
    tmp_path: Path, entries: list[bytes]
) -> None:
    # The log signs a checkpoint of size 2**62 over a directory holding 600 entries: the
    # verifier must fetch bundles one by one and stop at the first missing one, not list
    # every bundle first (MemoryError, or exhausting the machine's memory).
    directory = tmp_path / "huge"
    build_log(directory, entries[:600])
    checkpoint = Checkpoint(ORIGIN, 2**62, b"\x01" * 32)
    (directory / "checkpoint").write_text(sign_checkpoint(checkpoint, signer()))
    state = tmp_path / "state.json"
    args = ["audit", "verify", "--dir", str(directory), "--key", VKEY, "--state", str(state)]
    run = subprocess.run(
        [sys.executable, "-c", _HUGE_SIZE_RUN, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 1, run.stderr[-2000:]
    assert "entry 512 is missing: tile/entries/002 not found" in run.stderr
    assert "Traceback" not in run.stderr
    assert not state.exists()
