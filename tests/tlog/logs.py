"""Building real tiled logs on disk for the verifier tests, with the production tiles code."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from porchlight.tlog.checkpoint import Checkpoint, sign_checkpoint
from porchlight.tlog.merkle import root
from porchlight.tlog.note import Ed25519Signer
from porchlight.tlog.tiles import build_tiles, leaf_hashes, write_files

ORIGIN = "porchlight.test/log"
TESSERA_VKEY = "example.com/log/testdata+33d7b496+AeHTu4Q3hEIMHNqc6fASMsq3rKNx280NI+oO5xCFkkSx"


def entry(index: int) -> bytes:
    record = {
        "index": index,
        "time": f"2026-11-22T10:{index // 60 % 60:02d}:{index % 60:02d}Z",
        "actor": f"reviewer:{index % 13}",
        "action": ("request.file", "review.approve", "ask.send", "consent.give")[index % 4],
        "subject": f"request:{index // 5}",
        "details": {"n": index},
    }
    return json.dumps(record, sort_keys=True).encode()


def signer() -> Ed25519Signer:
    return Ed25519Signer(ORIGIN, bytes(range(32)))


def write_tiles(directory: Path, entries: Sequence[bytes]) -> None:
    """Write every tile and bundle of a log holding `entries` (replacing what is there)."""
    shutil.rmtree(directory / "tile", ignore_errors=True)
    write_files(directory, build_tiles(entries))


def write_bundles_only(directory: Path, entries: Sequence[bytes]) -> None:
    """Rewrite only the entry bundles, as a database edit leaves stored tree hashes alone."""
    shutil.rmtree(directory / "tile" / "entries", ignore_errors=True)
    files = {p: d for p, d in build_tiles(entries).items() if p.startswith("tile/entries/")}
    write_files(directory, files)


def add_tiles(directory: Path, entries: Sequence[bytes]) -> None:
    """Write the tiles of a grown log beside the old ones, as an append-only log does."""
    write_files(directory, build_tiles(entries))


def sign(directory: Path, entries: Sequence[bytes], name: str = "checkpoint") -> str:
    """Sign a checkpoint over `entries` with the log's key and write it as `name`."""
    text = sign_checkpoint(Checkpoint(ORIGIN, len(entries), root(leaf_hashes(entries))), signer())
    (directory / name).write_text(text)
    return text


def build_log(directory: Path, entries: Sequence[bytes]) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    write_tiles(directory, entries)
    return sign(directory, entries)
