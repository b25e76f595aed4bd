"""The server's verifiable log, side by side on SQLite and PostgreSQL.

For each database (a fresh SQLite file; a freshly created PostgreSQL database named from
--postgres or $PORCHLIGHT_TEST_POSTGRES_URL, dropped afterwards):

1. migrate, then bulk-load the log to --entries (default 1,000,000) entries with the same code
   appends use (`encode_entry`, RFC 6962 leaf hashes, `app.log.tree.store_all_levels`),
   not a million HTTP calls; not timed against any target;
2. durable appends as users make them, through `app.audit.service.append` on the full-size
   log, each transaction committed (fsync on: SQLite WAL synchronous=FULL, PostgreSQL
   synchronous_commit=on): one writer, and --writers concurrent writers (--processes
   processes with their threads, one connection each), one entry per transaction; one writer
   100 entries per transaction (`append_many`). Meanwhile an integrator runs as in every
   server process (`app.audit.integrator`, every `log_integrate_interval_seconds`), and the
   integration lag is measured: from a writer's commit returning to the integrating
   transaction's commit returning (the entry has its index and is in the tree);
3. publish a signed checkpoint, start the real server (uvicorn, --workers processes, default
   one) on loopback;
4. inclusion-proof latency p50/p99 over random indexes: the proof read from the database
   (`app.log.tree.inclusion`, what the endpoint runs) and the whole HTTP round trip of
   `GET /log/proof/inclusion`;
5. full verification of the whole log with `porchlight.tlog.verify.verify_log` over HTTP from
   that server, --verify-reads parallel reads (default 8): as `porchlight audit verify
   --server` runs it (every entry bundle and every hash tile above level 0), then as with
   --all-tiles (every level-0 hash tile as well).

    .venv/bin/python bench/log.py [--entries N] [--appends N] [--proofs N] [--postgres URL]
        [--writers N] [--processes N] [--appends-only] [--workers N] [--verify-reads N]

Targets (issue 4): >= 2,000 durable appends/s on PostgreSQL, proof p99 < 10 ms, full
verification of 1,000,000 entries < 10 s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import create_engine, insert, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.accounts import service as accounts  # noqa: E402
from app.accounts.passwords import make_hasher  # noqa: E402
from app.audit import integrator  # noqa: E402
from app.audit import service as audit  # noqa: E402
from app.audit.entry import JSONValue  # noqa: E402
from app.audit.models import LogEntry, LogHead  # noqa: E402
from app.db import make_engine, make_sessionmaker  # noqa: E402
from app.log import checkpoints, tree  # noqa: E402
from app.log.keys import load_or_create  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.permissions import Role  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.serving import free_port, serving  # noqa: E402
from porchlight.tlog.verify import HttpSource, verify_log  # noqa: E402

ACTIONS = (
    "request:submit",
    "request:approve",
    "ask:create",
    "ask:consent",
    "clip:share",
    "clip:download",
    "clip:purge",
)
CHUNK = 20_000


def progress(message: str) -> None:
    print(f"\r{message:<70}", end="", file=sys.stderr, flush=True)


def entry_row(index: int, start: datetime) -> dict[str, object]:
    moment = start + timedelta(seconds=index)
    action = ACTIONS[index % len(ACTIONS)]
    subject = f"request:{index // 9}"
    actor = f"user:{index % 977 + 1}"
    details: dict[str, JSONValue] = {"ask": f"ask:{index // 3}", "clips": index % 5}
    return {"index": index, **audit.entry_row(moment, actor, action, subject, details)}


def bulk_load(database_url: str, count: int) -> float:
    """Fill an empty log with `count` entries and their tree; returns seconds taken."""
    began = time.perf_counter()
    engine = make_engine(database_url)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    leaves: list[bytes] = []
    with make_sessionmaker(engine)() as session:
        for first in range(0, count, CHUNK):
            rows = [entry_row(i, start) for i in range(first, min(count, first + CHUNK))]
            leaves.extend(row["leaf_hash"] for row in rows)  # type: ignore[misc]
            session.execute(insert(LogEntry), rows)
            progress(f"bulk load: entries {first + len(rows):,}/{count:,}")
        progress("bulk load: tree nodes")
        tree.store_all_levels(session, leaves)
        session.execute(update(LogHead).values(size=count))
        session.commit()
    engine.dispose()
    print(file=sys.stderr)
    return time.perf_counter() - began


def _writer_process(
    database_url: str, threads: int, per_thread: int, tag: str, start_at: float
) -> list[tuple[str, float, float]]:
    """`threads` writers, each committing `per_thread` single-entry transactions; returns
    (subject, began, committed) per entry, wall-clock seconds."""
    engine = make_engine(database_url)
    factory = make_sessionmaker(engine)
    done: list[tuple[str, float, float]] = []

    def writer(number: int) -> None:
        for t in range(per_thread):
            subject = f"clip:{tag}-{number}-{t}"
            began = time.time()
            with factory() as session:
                audit.append(session, f"user:{number + 1}", "clip:download", subject)
                session.commit()
            done.append((subject, began, time.time()))

    time.sleep(max(0.0, start_at - time.time()))
    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    engine.dispose()
    return done


def _integrate_until(
    factory: sessionmaker[Session], interval: float, stop: threading.Event
) -> list[tuple[range, float]]:
    """What every server process runs: integrate pending entries every `interval` seconds
    (here until `stop` is set and nothing is pending). Returns (indexes, committed at)."""
    rounds: list[tuple[range, float]] = []
    while True:
        stopping = stop.wait(interval)
        with factory() as session:
            while True:
                batch = integrator.integrate(session, wait=False)
                session.commit()
                if len(batch):
                    rounds.append((batch, time.time()))
                if len(batch) < integrator.BATCH:
                    break
            if stopping and not integrator.has_pending(session):
                return rounds


def appends(
    database_url: str, total: int, processes: int, threads: int, per_transaction: int = 1
) -> tuple[float, list[float]]:
    """Durable appends per second, and each entry's integration lag in milliseconds."""
    engine = make_engine(database_url)
    factory = make_sessionmaker(engine)
    interval = Settings().log_integrate_interval_seconds
    stop = threading.Event()
    rounds: list[tuple[range, float]] = []
    integrating = threading.Thread(
        target=lambda: rounds.extend(_integrate_until(factory, interval, stop))
    )
    integrating.start()
    committed: list[tuple[str, float, float]] = []
    try:
        if per_transaction == 1:
            per_thread = total // (processes * threads)
            start_at = time.time() + (2.0 if processes > 1 else 0.0)
            if processes == 1:
                committed = _writer_process(database_url, threads, per_thread, "p0", start_at)
            else:
                # Separate processes, as separate server workers are: Python threads alone
                # would measure the interpreter lock.
                context = multiprocessing.get_context("spawn")
                with context.Pool(processes) as pool:
                    jobs = [
                        pool.apply_async(
                            _writer_process, (database_url, threads, per_thread, f"p{n}", start_at)
                        )
                        for n in range(processes)
                    ]
                    for job in jobs:
                        committed.extend(job.get())
        else:
            for t in range(total // per_transaction):
                records = [
                    ("user:1", "clip:download", f"clip:b{t}-{k}", {"k": k})
                    for k in range(per_transaction)
                ]
                began = time.time()
                with factory() as session:
                    audit.append_many(session, records)  # type: ignore[arg-type]
                    session.commit()
                ended = time.time()
                committed.extend((subject, began, ended) for _, _, subject, _ in records)
    finally:
        stop.set()
        integrating.join()
    elapsed = max(e for _, _, e in committed) - min(b for _, b, _ in committed)
    commit_time = {subject: ended for subject, _, ended in committed}
    lags: list[float] = []
    with factory() as session:
        for batch, integrated_at in rounds:
            subjects = session.scalars(
                select(LogEntry.subject).where(
                    LogEntry.index >= batch.start, LogEntry.index < batch.stop
                )
            )
            lags.extend(
                (integrated_at - commit_time[subject]) * 1000
                for subject in subjects
                if subject in commit_time
            )
    engine.dispose()
    assert len(lags) == len(committed), "an entry was not integrated"
    return len(committed) / elapsed, lags


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def timed(calls: int, call: Callable[[int], object], size: int) -> list[float]:
    rng = random.Random(6962)
    samples = []
    for _ in range(calls):
        index = rng.randrange(size)
        began = time.perf_counter()
        call(index)
        samples.append((time.perf_counter() - began) * 1000)
    return samples


@contextmanager
def server(database_url: str, data_dir: Path, workers: int = 1) -> Iterator[str]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PORCHLIGHT_")},
        "PORCHLIGHT_DATABASE_URL": database_url,
        "PORCHLIGHT_DATA_DIR": str(data_dir),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app",
         "--port", str(port), "--log-level", "warning", "--workers", str(workers)],
        cwd=REPO, env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with serving(process, url):
        yield url


@contextmanager
def database(kind: str, postgres: str | None, scratch: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{scratch / 'bench.sqlite3'}"
        return
    assert postgres
    name = f"porchlight_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(kind: str, args: argparse.Namespace, scratch: Path) -> dict[str, str]:
    results: dict[str, str] = {}
    with database(kind, args.postgres, scratch) as url:
        upgrade(url)
        loaded = bulk_load(url, args.entries)
        results["bulk load (not a target)"] = f"{loaded:.0f} s"
        progress(f"{kind}: appends")
        one, _ = appends(url, args.appends // 4, 1, 1)
        threads = max(1, args.writers // args.processes)
        writers = threads * args.processes
        many, lags = appends(url, args.appends * 5, args.processes, threads)
        batched, _ = appends(url, args.appends * 5, 1, 1, 100)
        results["durable appends/s, 1 writer, 1 per tx"] = f"{one:,.0f}"
        results[f"durable appends/s, {writers} writers, 1 per tx"] = f"{many:,.0f}"
        p50, p99 = percentiles(lags)
        results[f"integration lag, {writers} writers, p50 / p99"] = f"{p50:.0f} / {p99:.0f} ms"
        results["durable appends/s, 1 writer, 100 per tx (append_many)"] = f"{batched:,.0f}"
        if args.appends_only:
            return results
        data_dir = scratch / f"data-{kind}"
        settings = Settings(data_dir=data_dir, database_url=url)
        signer = load_or_create(settings)
        engine = make_engine(url)
        factory = make_sessionmaker(engine)
        with factory() as session:
            published = checkpoints.publish_checkpoint(session, signer)
            size = published.size
            session.commit()
        results["log size"] = f"{size:,}"
        progress(f"{kind}: proofs")

        def db_proof(index: int) -> None:
            with factory() as session:
                tree.inclusion(session, index, size)
                session.rollback()

        p50, p99 = percentiles(timed(args.proofs, db_proof, size))
        results["inclusion proof from DB, p50 / p99"] = f"{p50:.2f} / {p99:.2f} ms"
        with factory() as session:
            # Entry bundles are for auditors only: verification runs with an auditor's token.
            auditor = accounts.create_user(
                session,
                make_hasher(1, 1024),
                username=f"bench-auditor-{uuid.uuid4().hex[:8]}",
                password=secrets.token_urlsafe(18),
                role=Role.auditor,
                agency_id=None,
                actor="system",
                now=datetime.now(UTC),
            )
            _, token = accounts.create_api_token(session, auditor, "bench", datetime.now(UTC))
            session.commit()
        engine.dispose()
        with server(url, data_dir, args.workers) as base, httpx.Client(timeout=60) as client:

            def http_proof(index: int) -> None:
                response = client.get(f"{base}/log/proof/inclusion", params={"index": index})
                response.raise_for_status()

            p50, p99 = percentiles(timed(args.proofs, http_proof, size))
            results["inclusion proof over HTTP, p50 / p99"] = f"{p50:.2f} / {p99:.2f} ms"
            progress(f"{kind}: full verification over HTTP")
            # As `porchlight audit verify --server` runs it: level-0 tiles only on a failure;
            # then with --all-tiles (every level-0 tile compared too).
            for leaf_tiles, row in (
                (False, "full verification over HTTP (audit verify --server)"),
                (True, "full verification over HTTP, --all-tiles"),
            ):
                began = time.perf_counter()
                source = HttpSource(
                    f"{base}/log",
                    parallel_reads=args.verify_reads,
                    headers={"Authorization": f"Bearer {token}"},
                )
                verified = verify_log(source, signer.verifier_key, leaf_tiles=leaf_tiles)
                elapsed = time.perf_counter() - began
                source.close()
                # The auditor's account added its own entries after the proofs were timed.
                assert verified.checkpoint.size >= size
                results[row] = f"{elapsed:.1f} s"
    print(file=sys.stderr)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--proofs", type=int, default=2000)
    parser.add_argument("--postgres", default=os.environ.get("PORCHLIGHT_TEST_POSTGRES_URL"))
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument(
        "--workers", type=int, default=1, help="uvicorn processes serving the proofs and tiles"
    )
    parser.add_argument(
        "--verify-reads", type=int, default=8, help="the verifier's parallel HTTP reads"
    )
    parser.add_argument("--writers", type=int, default=32, help="concurrent single-entry writers")
    parser.add_argument("--processes", type=int, default=4, help="processes the writers run in")
    parser.add_argument(
        "--appends-only", action="store_true", help="stop after the append measurements"
    )
    args = parser.parse_args()
    kinds = [k for k in ("sqlite", "postgresql") if args.only in (None, k)]
    if "postgresql" in kinds and not args.postgres:
        print("no --postgres URL: PostgreSQL skipped", file=sys.stderr)
        kinds.remove("postgresql")
    table: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for kind in kinds:
            table[kind] = run(kind, args, Path(scratch))
    rows = list(next(iter(table.values())))
    width = max(len(r) for r in rows)
    print(f"| {'':<{width}} | " + " | ".join(f"{k:>16}" for k in table) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * 17 + ":" for _ in table) + "|")
    for row in rows:
        print(f"| {row:<{width}} | " + " | ".join(f"{table[k][row]:>16}" for k in table) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
