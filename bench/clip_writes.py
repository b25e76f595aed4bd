"""What a 1 GiB clip costs the server's clip store to write, with and without dropping its pages.

`app.clipstore.local` drops a blob's pages from the page cache once they are on disk, so a
large write keeps reusing about DIRTY_LIMIT of memory. This bench writes --size-mib through
`LocalClipStore.writer` (1 MiB chunks, as an upload hands them over: SHA-256 on its own thread,
write-back started every 8 MiB and waited for past 64 MiB, the closing fsync and rename), in
two variants, alternated --repeat times:

* `drop`: the store as it is;
* `keep`: the same with the dropping turned off, so every megabyte lands in fresh pages and
  the blob stays cached (the store before the change).

Each row gives the wall time, the process's CPU (every thread, user + system) and how much of
the blob is still in the page cache afterwards (mincore). Blobs stay on disk until the end, as
a server's do, so the cache grows in `keep` as it would on a server. On a virtual machine whose
host takes back the guest's free memory (free page reporting, as on Firecracker), a fresh page
faults to the host on first touch; that is what `keep` pays and `drop` mostly avoids.

    .venv/bin/python bench/clip_writes.py [--size-mib 1024] [--repeat 3] [--dir DIR]

DIR must be on the file system that holds the server's data directory (default: a temporary
directory under the current one; /tmp may be a tmpfs, where nothing is written to disk).
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.clipstore import LocalClipStore, local
from bench.common import positive

MIB = 1024 * 1024


def cached_bytes(path: Path) -> int:
    """How much of the file is in the page cache (mincore(2) over a mapping of it)."""
    size = path.stat().st_size
    pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_COPY) as m:
        address = ctypes.addressof(ctypes.c_char.from_buffer(m))
        vector = (ctypes.c_ubyte * pages)()
        if libc.mincore(address, size, vector) != 0:
            raise OSError(ctypes.get_errno(), "mincore failed")
        resident = sum(byte & 1 for byte in vector)
        del address
    return resident * mmap.PAGESIZE


def write_once(store: LocalClipStore, key: str, block: bytes, size_mib: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) to write and commit one blob."""
    started, cpu = time.perf_counter(), time.process_time()
    writer = store.writer(key, max_size=size_mib * MIB)
    for _ in range(size_mib):
        writer.write(block)
    writer.commit()
    return time.perf_counter() - started, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=positive, default=1024, help="blob size (MiB)")
    parser.add_argument("--repeat", type=positive, default=3, help="runs of each variant")
    parser.add_argument(
        "--dir", type=Path, default=Path.cwd(), help="where the store's scratch directory goes"
    )
    args = parser.parse_args()
    if not hasattr(os, "posix_fadvise"):
        parser.error("this platform has no posix_fadvise: both variants would be the same")
    block = os.urandom(MIB)
    dropping = local._drop_cached
    results: dict[str, list[tuple[float, float, int]]] = {"drop": [], "keep": []}
    with tempfile.TemporaryDirectory(prefix="porchlight-clip-writes-", dir=args.dir) as scratch:
        store = LocalClipStore(Path(scratch))
        for run in range(args.repeat):
            for variant in ("keep", "drop"):
                local._drop_cached = dropping if variant == "drop" else lambda *_: None
                key = f"{variant}-{run}"
                os.sync()
                wall, cpu = write_once(store, key, block, args.size_mib)
                cached = cached_bytes(store.blob_dir / key)
                results[variant].append((wall, cpu, cached))
                print(
                    f"{variant} {run + 1}/{args.repeat}: {wall:.2f} s, CPU {cpu:.2f} s, "
                    f"{cached / MIB:.0f} MiB cached",
                    file=sys.stderr,
                )
        local._drop_cached = dropping
    gib = args.size_mib / 1024
    print(f"\n{args.size_mib} MiB a blob through LocalClipStore.writer, {args.repeat} runs each\n")
    print("| variant | MB/s, best (median) | seconds per GiB | CPU s per GiB | cached after |")
    print("|---|---:|---:|---:|---:|")
    for variant, rows in results.items():
        rates = sorted(args.size_mib * MIB / 1e6 / wall for wall, _, _ in rows)
        walls = [wall / gib for wall, _, _ in rows]
        cpus = [cpu / gib for _, cpu, _ in rows]
        cached = max(c for _, _, c in rows) / MIB
        print(
            f"| {variant} | {rates[-1]:,.0f} ({statistics.median(rates):,.0f}) | "
            f"{min(walls):.2f}-{max(walls):.2f} | {min(cpus):.2f}-{max(cpus):.2f} | "
            f"{cached:,.0f} MiB at most |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
