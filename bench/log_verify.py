"""Full verification time of a large tiled log: from a local tile directory, or over HTTP from
the real server on a PostgreSQL database that already holds a large log.

Local (default): builds a log of N realistic JSON entries (default 1,000,000) with
`porchlight.tlog.tiles`, signs its checkpoint, writes it as a c2sp.org/tlog-tiles directory,
then times `porchlight.tlog.verify.verify_log` over it: signature check, every entry bundle
read and re-hashed, the whole tree rebuilt, every tile compared. Building is not timed.

    .venv/bin/python bench/log_verify.py [--size N] [--repeat R] [--dir DIR]

Server (--database URL --data-dir DIR): the log in that database (signed with the key in DIR,
the server's data directory) is served by the real server (uvicorn, --workers processes) on
loopback, and measured as issue 4 states its targets: inclusion proofs from the database
(in a session, as bench/log.py times them, and as the endpoint reads them) and over HTTP
(`GET /log/proof/inclusion`, --proofs random indexes), then --repeat full verifications as
`porchlight audit verify --server` runs them (an auditor's token, --verify-reads parallel
reads, level-0 tiles not read). Alongside the wall times: CPU seconds of the server processes
(per proof, per entry bundle) and of the PostgreSQL backends serving them (all on this
machine), and the load average, since other work on the machine moves the wall times.
--prepare N first creates that database and bulk-loads N entries (bench/log.py's loader,
about 2-5 minutes for 1,000,000); later runs reuse it.

    .venv/bin/python bench/log_verify.py --database postgresql+psycopg://postgres@127.0.0.1/logbench
        --data-dir /tmp/logbench [--prepare 1000000] [--workers 2] [--proofs 2000] [--repeat 3]

Targets (issue 4): full verification of 1,000,000 entries in under 10 s; proof p99 < 10 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from porchlight.tlog.checkpoint import Checkpoint, sign_checkpoint  # noqa: E402
from porchlight.tlog.merkle import root  # noqa: E402
from porchlight.tlog.note import generate_signer  # noqa: E402
from porchlight.tlog.tiles import build_tiles, leaf_hashes, write_files  # noqa: E402
from porchlight.tlog.verify import DirectorySource, verify_log  # noqa: E402

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


def _load() -> str:
    return "load " + " ".join(f"{value:.1f}" for value in os.getloadavg())


def _prepare(database_url: str, data_dir: Path, size: int) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from app.migrate import upgrade
    from bench.log import bulk_load

    url = make_url(database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{url.database}"'))
    admin.dispose()
    upgrade(database_url)
    print(f"bulk load: {bulk_load(database_url, size):.0f} s", file=sys.stderr)
    with create_engine(database_url, isolation_level="AUTOCOMMIT").connect() as connection:
        # As autovacuum would have by the time a real log is this large.
        connection.execute(text("ANALYZE"))
    _publish(database_url, data_dir)


def _publish(database_url: str, data_dir: Path) -> tuple[int, str]:
    """Publish a checkpoint if the log grew; (its size, the log's verifier key)."""
    from app.db import make_engine, make_sessionmaker
    from app.log import checkpoints
    from app.log.keys import load_or_create
    from app.settings import Settings

    signer = load_or_create(Settings(data_dir=data_dir, database_url=database_url))
    engine = make_engine(database_url)
    with make_sessionmaker(engine)() as session:
        size = checkpoints.publish_checkpoint(session, signer).size
        session.commit()
    engine.dispose()
    return size, signer.verifier_key


def _auditor_token(database_url: str) -> str:
    from app.db import make_engine, make_sessionmaker
    from bench.log import auditor_token

    engine = make_engine(database_url)
    try:
        return auditor_token(make_sessionmaker(engine))
    finally:
        engine.dispose()


def _backends(database_url: str) -> list[int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as connection:
        pids = connection.execute(
            text(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalars()
        found = list(pids)
    engine.dispose()
    return found


def serve_and_measure(args: argparse.Namespace) -> int:
    import httpx

    from app.db import make_engine, make_sessionmaker
    from app.log import tree
    from bench.log import percentiles, process_cpu, server_processes, timed
    from porchlight.tlog.verify import HttpSource

    url: str = args.database
    if args.prepare:
        _prepare(url, args.data_dir, args.prepare)
    size, vkey = _publish(url, args.data_dir)
    token = _auditor_token(url)
    rows = [("machine before", _load()), ("log size", f"{size:,}")]
    engine = make_engine(url)
    factory = make_sessionmaker(engine)

    def in_session(index: int) -> None:
        with factory() as session:
            tree.inclusion(session, index, size)
            session.rollback()

    def as_the_endpoint(index: int) -> None:
        with tree.RawReads(engine) as reads:
            tree.published_and_committed(reads)
            tree.inclusion_with_root(reads, index, size)

    p50, p99 = percentiles(timed(args.proofs, in_session, size))
    rows.append(("inclusion proof from DB (session), p50 / p99", f"{p50:.2f} / {p99:.2f} ms"))
    p50, p99 = percentiles(timed(args.proofs, as_the_endpoint, size))
    rows.append(("inclusion proof from DB (endpoint), p50 / p99", f"{p50:.2f} / {p99:.2f} ms"))
    engine.dispose()
    with (
        server_processes(url, args.data_dir, args.workers) as (base, workers),
        httpx.Client(timeout=60) as client,
    ):

        def over_http(index: int) -> None:
            client.get(f"{base}/log/proof/inclusion", params={"index": index}).raise_for_status()

        before = process_cpu(workers)
        p50, p99 = percentiles(timed(args.proofs, over_http, size))
        per_proof = (process_cpu(workers) - before) / args.proofs * 1000
        rows.append(("inclusion proof over HTTP, p50 / p99", f"{p50:.2f} / {p99:.2f} ms"))
        rows.append(("server CPU per proof", f"{per_proof:.2f} ms"))
        for run in range(1, args.repeat + 1):
            backends = _backends(url)
            load = _load()
            server_cpu, database_cpu = process_cpu(workers), process_cpu(backends)
            own_cpu, began = time.process_time(), time.perf_counter()
            source = HttpSource(
                f"{base}/log",
                parallel_reads=args.verify_reads,
                headers={"Authorization": f"Bearer {token}"},
            )
            verified = verify_log(source, vkey, leaf_tiles=False)
            elapsed = time.perf_counter() - began
            source.close()
            bundles = -(-verified.checkpoint.size // 256)
            server_cpu = process_cpu(workers) - server_cpu
            database_cpu = process_cpu(backends) - database_cpu
            rows.append(
                (
                    f"verification {run} ({load}), {verified.checkpoint.size:,} entries",
                    f"{elapsed:.1f} s; CPU per bundle: server {server_cpu / bundles * 1000:.2f}"
                    f" ms, PostgreSQL {database_cpu / bundles * 1000:.2f} ms; verifier"
                    f" {time.process_time() - own_cpu:.1f} s",
                )
            )
    rows.append(("machine after", _load()))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="build here instead of a temporary directory")
    parser.add_argument("--database", help="PostgreSQL URL of a database holding a large log")
    parser.add_argument("--data-dir", type=Path, help="the server's data dir (its log key)")
    parser.add_argument("--prepare", type=int, default=0, help="first create and fill --database")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn processes")
    parser.add_argument("--proofs", type=int, default=2000, help="inclusion proofs timed")
    parser.add_argument("--verify-reads", type=int, default=8, help="the verifier's parallel reads")
    args = parser.parse_args()
    if args.database:
        if args.data_dir is None:
            parser.error("--database needs --data-dir (the server's data dir with its log key)")
        return serve_and_measure(args)
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
