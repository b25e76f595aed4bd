"""Full verification time of a large tiled log read from a local tile directory.

Builds a log of N realistic JSON entries (default 1,000,000) with `porchlight.tlog.tiles`,
signs its checkpoint, writes it as a c2sp.org/tlog-tiles directory, then times
`porchlight.tlog.verify.verify_log` over it: signature check, every entry bundle read and
re-hashed, the whole tree rebuilt, every tile compared. Building is not timed.

    .venv/bin/python bench/log_verify.py [--size N] [--repeat R] [--dir DIR]

Target (issue 4): full verification of 1,000,000 entries in under 10 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from porchlight.tlog.checkpoint import Checkpoint, sign_checkpoint
from porchlight.tlog.merkle import root
from porchlight.tlog.note import generate_signer
from porchlight.tlog.tiles import build_tiles, leaf_hashes, write_files
from porchlight.tlog.verify import DirectorySource, verify_log

ORIGIN = "bench.porchlight.example/log"


def _entry(index: int) -> bytes:
    record = {
        "index": index,
        "time": f"2026-11-22T12:{index // 60 % 60:02d}:{index % 60:02d}Z",
        "actor": f"user:{index % 977}",
        "action": ("request.file", "review.approve", "ask.send", "consent.give")[index % 4],
        "subject": f"request:{index // 7}",
        "details": {"warrant": f"CASE-{index:08d}", "clips": index % 5},
    }
    return json.dumps(record, separators=(",", ":"), sort_keys=True).encode()


def build(directory: Path, size: int) -> str:
    """Write a signed log of `size` entries under `directory`; return its verifier key."""
    entries = [_entry(i) for i in range(size)]
    signer = generate_signer(ORIGIN)
    write_files(directory, build_tiles(entries))
    checkpoint = Checkpoint(ORIGIN, size, root(leaf_hashes(entries)))
    (directory / "checkpoint").write_text(sign_checkpoint(checkpoint, signer))
    return signer.verifier().vkey()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="build here instead of a temporary directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="porchlight-logbench-") as scratch:
        directory = args.dir or Path(scratch)
        started = time.perf_counter()
        vkey = build(directory, args.size)
        built = time.perf_counter() - started
        files = sum(1 for p in directory.rglob("*") if p.is_file())
        print(f"built {args.size} entries ({files} files) in {built:.1f} s", file=sys.stderr)
        timings = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = verify_log(DirectorySource(directory), vkey)
            timings.append(time.perf_counter() - started)
            assert result.checkpoint.size == args.size
    best, median = min(timings), statistics.median(timings)
    print("| entries | tile files | full verification (median) | best | entries/s |")
    print("|---:|---:|---:|---:|---:|")
    print(
        f"| {args.size:,} | {files:,} | {median:.2f} s | {best:.2f} s | {args.size / median:,.0f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
