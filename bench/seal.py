"""File-to-file sealing throughput: porchlight's age against Debian's age, cp and openssl.

Generates a random file (default 1 GiB), then times, best of --repeat runs each:

* encrypt: `porchlight encrypt` (the CLI, interpreter start-up included), the library
  call `porchlight.age.encrypt_file` alone (one worker process per core, the default
  for files of 8 MiB or more), the same with `workers=1` (the one-process pipeline),
  Debian `age -e`, `cp` of the plaintext, and the pipeline copying without crypto (the
  floor for a tool that must see the bytes: `cp` uses copy_file_range, which never
  brings them into user space);
* decrypt: the same for an age-made file, and `cp` of that file;

every run in its own process under GNU time, which gives the peak RSS of the largest
process in the run (workers included) and the CPU seconds of all of them; the library
rows time only the call itself. Before each timing the input is read through (so it is
in the page cache whatever the kernel evicted meanwhile) and `os.sync()` runs, so one
run's write-back does not land on the next. The raw
ChaCha20-Poly1305 rate comes from `openssl speed -evp chacha20-poly1305`. Outputs are
checked against the input once. X25519 keys, so Debian's age (1.1.1, no post-quantum)
reads and writes the same files; the payload work is identical for any recipient type.

Python runs with its bytecode cache, as an installed package does (pip compiles it at
install time; age and cp are compiled programs): the children get PYTHONPYCACHEPREFIX in
the work directory and PYTHONDONTWRITEBYTECODE removed, and one untimed run of each
command fills the cache first. Without it (PYTHONDONTWRITEBYTECODE=1 in the environment
this was written in) every CLI run recompiled porchlight's modules: ~70 ms of CPU.
Fairness: every tool reads the same warm input and writes a fresh file (the previous
output unlinked) in the same directory; nobody fsyncs.

The two-core floor printed at the end is (cipher at openssl's rate + cp's CPU + the CPU
of mapping the input and touching every page, measured alone) / 2, against the library
call's own CPU (workers included, interpreter start-up not). What mapping costs depends
on how the input sits in the page cache: the plaintext here, written in 4 MiB pieces,
lands in 2 MiB folios that map with one fault each (~0.01 s a GiB measured), while age's
output, written in small pieces, maps 64 KiB a fault (0.12-0.16 s a GiB, about a third
of what cp spends). cp never maps its input, so no tool that does can do better.

    .venv/bin/python bench/seal.py [--size-mib 1024] [--repeat 3] [--dir DIR]

Targets (issue 2): at least 1.5x age and 80 % of cp in both directions, peak RSS < 64 MiB.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from porchlight.age import generate_identity

MIB = 1024 * 1024
PYTHON = sys.executable
GNU_TIME = "/usr/bin/time"
# The children's environment: see "bytecode cache" in the docstring; main() adds the
# cache directory.
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
LIBRARY_RUN = """
import os, sys, time
from porchlight.age import encrypt_file, decrypt_file, parse_recipient, read_identity_file
from porchlight.age.pipeline import run_pipeline
op, src, dst, key, workers = sys.argv[1:6]
workers = None if workers == "auto" else int(workers)

def copy_block(block, final, out):
    out[: len(block)] = block
    return len(block)

started = time.perf_counter()
before = os.times()
if op == "encrypt":
    encrypt_file(src, dst, [parse_recipient(key)], workers=workers)
elif op == "decrypt":
    decrypt_file(src, dst, read_identity_file(key), workers=workers)
else:  # the same pipeline copying instead of sealing: the floor for any user-space tool
    with open(src, "rb", buffering=0) as s, open(dst, "wb", buffering=0) as d:
        run_pipeline(s, d, 1 << 20, 1 << 20, copy_block, None)
elapsed = time.perf_counter() - started
after = os.times()
# The call's own CPU: user + system of this process and of the workers it reaped.
print(elapsed, sum(after[:4]) - sum(before[:4]))
"""
# What getting the input into user space costs at least: map it read-only, touch one byte
# of every page and drop used pages every 8 MiB, as the workers do, with no cipher and no
# output. Prints the CPU seconds of that loop alone.
MAP_RUN = """
import mmap, os, sys
path = sys.argv[1]
size = os.path.getsize(path)
step = 1 << 20
with open(path, "rb", buffering=0) as handle:
    mapping = mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ)
view = memoryview(mapping)
before = os.times()
released = 0
for offset in range(0, size, step):
    bytes(view[offset : offset + step : mmap.PAGESIZE])
    end = min(size, offset + step) // mmap.PAGESIZE * mmap.PAGESIZE
    if end - released >= 8 * step or offset + step >= size:
        mapping.madvise(mmap.MADV_DONTNEED, released, end - released)
        released = end
after = os.times()
print(sum(after[:2]) - sum(before[:2]))
"""


@dataclass
class Result:
    direction: str
    tool: str
    seconds: list[float]
    process_seconds: list[float]
    cpu_seconds: list[float]
    # Library rows: the call's own CPU (workers included), without interpreter start-up.
    call_cpu_seconds: list[float]
    peak_rss_kib: int

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def run_child(argv: list[str], rss_file: Path) -> tuple[float, float, int, str]:
    """Wall time, CPU seconds (user + system), peak RSS (KiB) and stdout of one process.

    GNU time (a small C program) measures rather than our own wait4: on Linux a child's
    ru_maxrss includes the memory of the process that forked it, which exec carries over,
    and this bench's interpreter is itself ~25 MiB. Its figures cover the processes the
    child forked and waited for, so the sealing workers count too.
    """
    os.sync()
    started = time.perf_counter()
    done = subprocess.run(
        [GNU_TIME, "-f", "%M %U %S", "-o", str(rss_file), *argv],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        env=CHILD_ENV,
    )
    elapsed = time.perf_counter() - started
    peak, user, system = rss_file.read_text().split()[-3:]
    return elapsed, float(user) + float(system), int(peak), done.stdout


def run_library(
    op: str, src: Path, dst: Path, key: str, workers: str, rss_file: Path
) -> tuple[float, float, float, float, int]:
    """The library call's own time, its process's wall time, the process's CPU seconds, the
    call's own CPU seconds and the peak RSS."""
    elapsed, cpu, peak, out = run_child(
        [PYTHON, "-c", LIBRARY_RUN, op, str(src), str(dst), key, workers], rss_file
    )
    call, call_cpu = out.split()
    return float(call), elapsed, cpu, float(call_cpu), peak


def mapping_cpu(path: Path) -> float:
    """CPU seconds to bring a warm file into user space through a mapping (see MAP_RUN)."""
    done = subprocess.run(
        [PYTHON, "-c", MAP_RUN, str(path)], check=True, stdout=subprocess.PIPE, text=True
    )
    return float(done.stdout)


def warm(path: Path) -> None:
    """Read a file through, so it is in the page cache when the timing starts.

    The machine this was written on runs DAMON with a `pageout` scheme over physical
    memory, which evicts page-cache pages it finds cold, the bench's input files between
    runs included; without this, a run may or may not read its input from disk.
    """
    buffer = bytearray(8 * MIB)
    with open(path, "rb", buffering=0) as handle:
        while handle.readinto(buffer):
            pass


def openssl_rate() -> float | None:
    """openssl's ChaCha20-Poly1305 rate on 64 KiB blocks, in bytes per second."""
    try:
        done = subprocess.run(
            ["openssl", "speed", "-evp", "chacha20-poly1305", "-bytes", "65536", "-seconds", "2"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    match = re.search(r"ChaCha20-Poly1305\s+([\d.]+)k", done.stdout, re.IGNORECASE)
    return float(match.group(1)) * 1000 if match else None


def make_input(path: Path, size: int) -> None:
    block = 4 * MIB
    with open(path, "wb") as handle:
        written = 0
        while written < size:
            take = min(block, size - written)
            handle.write(os.urandom(take))
            written += take


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size-mib", type=int, default=1024, help="size of the random test file (default: 1024)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each row, in a shuffled order per round; best and median shown (default: 3)",
    )
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default: /tmp)")
    args = parser.parse_args()
    if args.size_mib < 1 or args.repeat < 1:
        parser.error("--size-mib and --repeat must be at least 1")
    age = shutil.which("age")
    if age is None:
        raise SystemExit("Debian's age is not installed (apt-get install age)")
    if not os.path.exists(GNU_TIME):
        raise SystemExit("GNU time is needed for peak memory (apt-get install time)")
    size = args.size_mib * MIB
    porchlight_cli = [PYTHON, "-m", "porchlight.cli"]

    with tempfile.TemporaryDirectory(dir=args.dir, prefix="seal-bench-") as work_dir:
        work = Path(work_dir)
        plain = work / "plain.bin"
        print(f"generating {args.size_mib} MiB of random data in {work} ...", file=sys.stderr)
        make_input(plain, size)
        identity = generate_identity("x25519")
        key_file = work / "key.txt"
        key_file.write_text(f"{identity}\n")
        recipient = str(identity.recipient())
        sealed = work / "sealed-by-age.age"
        subprocess.run([age, "-r", recipient, "-o", str(sealed), str(plain)], check=True)

        out = work / "out"
        plans: list[tuple[str, str, object]] = [
            ("encrypt", "cp (plaintext)", ["cp", str(plain), str(out)]),
            ("encrypt", "age 1.1.1", [age, "-r", recipient, "-o", str(out), str(plain)]),
            (
                "encrypt",
                "porchlight CLI",
                [*porchlight_cli, "encrypt", "-r", recipient, "-o", str(out), str(plain)],
            ),
            ("encrypt", "porchlight library", ("encrypt", plain, recipient, "auto")),
            ("encrypt", "library, 1 process", ("encrypt", plain, recipient, "1")),
            ("encrypt", "pipeline, no crypto", ("copy", plain, recipient, "1")),
            ("decrypt", "cp (age file)", ["cp", str(sealed), str(out)]),
            ("decrypt", "age 1.1.1", [age, "-d", "-i", str(key_file), "-o", str(out), str(sealed)]),
            (
                "decrypt",
                "porchlight CLI",
                [*porchlight_cli, "decrypt", "-i", str(key_file), "-o", str(out), str(sealed)],
            ),
            ("decrypt", "porchlight library", ("decrypt", sealed, str(key_file), "auto")),
            ("decrypt", "library, 1 process", ("decrypt", sealed, str(key_file), "1")),
            ("decrypt", "pipeline, no crypto", ("copy", sealed, str(key_file), "1")),
        ]
        results = [Result(d, t, [], [], [], [], 0) for d, t, _ in plans]
        mapping: dict[str, list[float]] = {"encrypt": [], "decrypt": []}
        # Fill the bytecode cache: one untimed run of each Python command on a small file.
        CHILD_ENV["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        small = work / "small.bin"
        small.write_bytes(os.urandom(1000))
        for argv in (
            [*porchlight_cli, "encrypt", "-r", recipient, "-o", str(out), str(small)],
            [*porchlight_cli, "decrypt", "-i", str(key_file), "-o", str(small), str(out)],
            [PYTHON, "-c", LIBRARY_RUN, "copy", str(small), str(out), "-", "1"],
        ):
            subprocess.run(argv, check=True, env=CHILD_ENV, stdout=subprocess.DEVNULL)
        out.unlink(missing_ok=True)
        load_before = os.getloadavg()
        # Interleave the repeats and shuffle the order each time: on this virtual machine
        # the first process to fill fresh page-cache pages after a big file is deleted can
        # pay seconds of kernel time in the copy (measured with perf: 70 % in
        # copy_folio_from_iter_atomic), so a fixed order penalises whoever runs after age.
        shuffler = random.Random(2)
        for _ in range(args.repeat):
            order = list(zip(results, plans, strict=True))
            shuffler.shuffle(order)
            for result, (direction, _, plan) in order:
                out.unlink(missing_ok=True)
                warm(plain if direction == "encrypt" else sealed)
                if isinstance(plan, tuple):
                    op, src, key, workers = plan
                    elapsed, whole, cpu, call_cpu, rss = run_library(
                        str(op), Path(str(src)), out, str(key), str(workers), work / "rss.txt"
                    )
                    result.call_cpu_seconds.append(call_cpu)
                else:
                    argv = [str(a) for a in plan]  # type: ignore[attr-defined]
                    elapsed, cpu, rss, _ = run_child(argv, work / "rss.txt")
                    whole = elapsed
                result.seconds.append(elapsed)
                result.process_seconds.append(whole)
                result.cpu_seconds.append(cpu)
                result.peak_rss_kib = max(result.peak_rss_kib, rss)
                print(f"  {result.direction} {result.tool}: {elapsed:.3f} s", file=sys.stderr)
            for direction, source in (("encrypt", plain), ("decrypt", sealed)):
                warm(source)
                mapping[direction].append(mapping_cpu(source))
        # Correctness, once: our decryption of age's file, and age's of ours.
        out.unlink(missing_ok=True)
        subprocess.run(
            [*porchlight_cli, "decrypt", "-i", str(key_file), "-o", str(out), str(sealed)],
            check=True,
        )
        if not filecmp.cmp(out, plain, shallow=False):
            raise SystemExit("porchlight's decryption of age's file differs from the input")
        ours = work / "sealed-by-porchlight.age"
        subprocess.run(
            [*porchlight_cli, "encrypt", "-r", recipient, "-o", str(ours), str(plain)], check=True
        )
        out.unlink()
        subprocess.run([age, "-d", "-i", str(key_file), "-o", str(out), str(ours)], check=True)
        if not filecmp.cmp(out, plain, shallow=False):
            raise SystemExit("age's decryption of porchlight's file differs from the input")

    load_after = os.getloadavg()
    rate = openssl_rate()
    print()
    print(
        f"{args.size_mib} MiB file to file, {args.repeat} runs each: best (median in "
        f"brackets); ratios best / median; process = wall seconds of the whole process "
        f"(start-up included; differs from seconds only for the library rows), median; "
        f"CPU = user + system seconds of the whole process tree, median; GB = 10^9 bytes"
    )
    header = (
        f"| {'direction':9} | {'tool':19} | {'seconds':>15} | {'GB/s':>5} | "
        f"{'vs age':>13} | {'vs cp':>11} | {'process':>7} | {'CPU s':>5} | {'peak RSS':>9} |"
    )
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for result in results:
        same = [r for r in results if r.direction == result.direction]
        age_row = next(r for r in same if r.tool.startswith("age"))
        cp_row = next(r for r in same if r.tool.startswith("cp"))
        median = statistics.median(result.seconds)
        seconds = f"{result.best:.3f} ({median:.3f})"
        vs_age = f"{age_row.best / result.best:.2f}x / {age_row.median / median:.2f}x"
        vs_cp = f"{cp_row.best / result.best:.0%} / {cp_row.median / median:.0%}"
        print(
            f"| {result.direction:9} | {result.tool:19} | {seconds:>15} | "
            f"{size / result.best / 1e9:5.2f} | {vs_age:>13} | {vs_cp:>11} | "
            f"{statistics.median(result.process_seconds):7.3f} | "
            f"{statistics.median(result.cpu_seconds):5.2f} | "
            f"{result.peak_rss_kib / 1024:5.1f} MiB |"
        )
    if rate is not None:
        print(
            f"\nopenssl speed -evp chacha20-poly1305 (64 KiB blocks, one core): "
            f"{rate / 1e9:.2f} GB/s"
        )
        # What two perfectly shared cores could do at best: the cipher's own time plus
        # what cp spends on the same output (page-cache pages filled by a copy), plus what
        # bringing the input into user space through a mapping costs (MAP_RUN), halved,
        # with Python free. No tool that must see the bytes and write them through the
        # page cache does better; cp itself never brings them into user space. In CPU
        # seconds, which a loaded machine inflates less than wall time: on an idle one,
        # cp's wall time is its CPU.
        cores = min(2, os.cpu_count() or 1)
        cipher = size / rate
        for direction in ("encrypt", "decrypt"):
            cp_row = next(r for r in results if r.direction == direction and r.tool[:2] == "cp")
            lib = next(r for r in results if r.direction == direction and "library" in r.tool)
            cp_cpu = statistics.median(cp_row.cpu_seconds)
            lib_cpu = statistics.median(lib.cpu_seconds)
            call_cpu = statistics.median(lib.call_cpu_seconds)
            mapped = statistics.median(mapping[direction])
            floor = (cipher + cp_cpu + mapped) / cores
            print(
                f"{direction}: floor on {cores} cores ({cipher:.3f} s cipher + {cp_cpu:.3f} s "
                f"cp CPU + {mapped:.3f} s mapping the input) / {cores} = {floor:.3f} s, so at "
                f"most {cp_cpu / floor:.0%} of cp ({cp_cpu / ((cipher + cp_cpu) / cores):.0%} "
                f"if reading the input were free); our library call used {call_cpu:.3f} s "
                f"CPU = cipher + cp + mapping + {call_cpu - cipher - cp_cpu - mapped:.3f} s, "
                f"its process {lib_cpu - call_cpu:.3f} s more (start-up and imports, outside "
                f"the call's time)"
            )
    print(f"machine: {os.cpu_count()} cores; work directory {args.dir or tempfile.gettempdir()}")
    print(
        "load average (1, 5, 15 min) before: "
        + ", ".join(f"{x:.1f}" for x in load_before)
        + "; after: "
        + ", ".join(f"{x:.1f}" for x in load_after)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
