"""The server's verifiable log, side by side on SQLite and PostgreSQL.

For each database (a fresh SQLite file; a freshly created PostgreSQL database named from
--postgres or $PORCHLIGHT_TEST_POSTGRES_URL, dropped afterwards):

1. migrate, then bulk-load the log to --entries (default 1,000,000) entries with the same code
   appends use (`encode_entry`, RFC 6962 leaf hashes, `app.log.tree.store_all_levels`),
   not a million HTTP calls; not timed against any target;
2. durable appends as users make them, through `app.audit.service.append` on the full-size log,
   each transaction committed (fsync on: SQLite WAL synchronous=FULL, PostgreSQL
   synchronous_commit=on): one writer, and each count of --writers concurrent writers (default
   8, then 32; --processes processes with their threads, one connection each), one entry per
   transaction; one writer 100 entries per transaction (`append_many`). Each writer transaction
   is what a request pays for its session besides its own change: a Session from the app's
   sessionmaker, a pooled connection (with the app engine's check at checkout, no round trip),
   BEGIN, the append, COMMIT. The entries are reads of warrant details (`request:read`: logged,
   no checkpoint of their own, like most appends). Meanwhile an integrator runs as in every
   server process (`app.audit.integrator`, every `log_integrate_interval_seconds`), and the
   integration lag is measured: from a writer's commit returning to the integrating
   transaction's commit returning (the entry has its index and is in the tree). CPU per entry
   is reported as writer threads + their PostgreSQL backends + integrator thread + its backend
   (thread CPU clocks and /proc of the backends; on SQLite the database's work is in the
   threads). Last, the last count of writers append request-lifecycle entries (`request:close`)
   with the server's publish hook, so each transaction integrates and signs a checkpoint as it
   commits;
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
        [--writers N[,N...]] [--processes N] [--appends-only] [--workers N] [--verify-reads N]

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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, event, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from app.accounts import service as accounts  # noqa: E402
from app.accounts.passwords import make_hasher  # noqa: E402
from app.audit import integrator  # noqa: E402
from app.audit import service as audit  # noqa: E402
from app.audit.entry import JSONValue  # noqa: E402
from app.audit.models import LogEntry, LogHead  # noqa: E402
from app.cli import settle_heap  # noqa: E402
from app.db import make_engine, make_sessionmaker  # noqa: E402
from app.log import checkpoints, tree  # noqa: E402
from app.log.keys import load_or_create  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.permissions import Role  # noqa: E402
from app.settings import Settings  # noqa: E402
from bench.common import fresh_database  # noqa: E402
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


def track_backends(engine: Engine) -> list[int]:
    """The process ids of the PostgreSQL backends serving `engine`'s connections (filled in as
    it connects; none on SQLite, whose work runs in the caller's own threads)."""
    pids: list[int] = []
    if engine.dialect.name == "postgresql":

        @event.listens_for(engine, "connect")
        def _record(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT pg_backend_pid()")
            pids.append(int(cursor.fetchone()[0]))
            cursor.close()
            dbapi_connection.rollback()

    return pids


def auditor_token(factory: sessionmaker[Session]) -> str:
    """An API token of a new auditor: entry bundles are for auditors only, so verification
    over HTTP runs with one."""
    with factory() as session:
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
    return token


def process_cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes have used so far; the backends run on this
    machine (the bench's database is on loopback)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (stat fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


# What the writers append. A read of warrant details is logged but publishes no checkpoint
# (app.log.checkpoints.READ_ACTIONS), like most appends; a request's state change such as
# `request:close` makes its transaction integrate, pad (to the default multiple of 16) and
# sign a checkpoint as it commits, under the log head's lock, which the "lifecycle" row
# measures (with the server's publish hook).
READ_ACTION = "request:read"
LIFECYCLE_ACTION = "request:close"


def _writer_process(
    database_url: str,
    threads: int,
    per_thread: int,
    tag: str,
    start_at: float,
    data_dir: str | None = None,
) -> tuple[list[tuple[str, float, float]], float, float]:
    """`threads` writers, each committing `per_thread` single-entry transactions; returns
    (subject, began, committed) per entry, wall-clock seconds, the writer threads' CPU seconds
    and their PostgreSQL backends' CPU seconds. With `data_dir` (the log key's), sessions
    publish a checkpoint as a lifecycle entry commits, as the server's do, and the writers
    append lifecycle entries."""
    engine = make_engine(database_url)
    backends = track_backends(engine)
    factory = make_sessionmaker(engine)
    action = READ_ACTION
    if data_dir is not None:
        signer = load_or_create(Settings(data_dir=Path(data_dir), database_url=database_url))
        checkpoints.install_publish_hook(factory, signer)
        action = LIFECYCLE_ACTION
    done: list[tuple[str, float, float]] = []
    cpu: list[float] = []
    settle_heap()  # as each server worker does once its app is built

    def writer(number: int) -> None:
        began_cpu = time.thread_time()
        for t in range(per_thread):
            subject = f"request:{tag}-{number}-{t}"
            began = time.time()
            with factory() as session:
                audit.append(session, f"user:{number + 1}", action, subject)
                session.commit()
            done.append((subject, began, time.time()))
        cpu.append(time.thread_time() - began_cpu)

    time.sleep(max(0.0, start_at - time.time()))
    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    backend_cpu = process_cpu(backends)
    engine.dispose()
    return done, sum(cpu), backend_cpu


def _integrate_until(
    factory: sessionmaker[Session], interval: float, stop: threading.Event, cpu: list[float]
) -> list[tuple[range, float]]:
    """What every server process runs: integrate pending entries every `interval` seconds
    (here until `stop` is set and nothing is pending). Returns (indexes, committed at), and
    appends the thread's CPU seconds to `cpu`."""
    rounds: list[tuple[range, float]] = []
    began_cpu = time.thread_time()
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
                cpu.append(time.thread_time() - began_cpu)
                return rounds


@dataclass
class AppendRun:
    per_second: float
    lags_ms: list[float]
    # CPU milliseconds per entry: the writers' threads, the integrator's thread, and the
    # PostgreSQL backends serving each (zero on SQLite, which runs in the callers' threads).
    writer_ms: float
    writer_backends_ms: float
    integrator_ms: float
    integrator_backend_ms: float

    def cpu_row(self) -> str:
        total = (
            self.writer_ms + self.writer_backends_ms + self.integrator_ms
            + self.integrator_backend_ms
        )  # fmt: skip
        if not self.writer_backends_ms and not self.integrator_backend_ms:
            return f"{total:.3f} = {self.writer_ms:.3f} + {self.integrator_ms:.3f}"
        return (
            f"{total:.3f} = {self.writer_ms:.3f} + {self.writer_backends_ms:.3f}"
            f" + {self.integrator_ms:.3f} + {self.integrator_backend_ms:.3f}"
        )


def appends(
    database_url: str,
    total: int,
    processes: int,
    threads: int,
    per_transaction: int = 1,
    data_dir: Path | None = None,
) -> AppendRun:
    """Durable appends per second, each entry's integration lag, and CPU per entry. With
    `data_dir`, lifecycle entries that each publish a checkpoint (see `_writer_process`)."""
    if data_dir is not None:
        # The log key, made once before the writer processes load it.
        load_or_create(Settings(data_dir=data_dir, database_url=database_url))
    engine = make_engine(database_url)
    integrator_backends = track_backends(engine)
    factory = make_sessionmaker(engine)
    interval = Settings().log_integrate_interval_seconds
    stop = threading.Event()
    rounds: list[tuple[range, float]] = []
    integrator_cpu: list[float] = []
    integrating = threading.Thread(
        target=lambda: rounds.extend(_integrate_until(factory, interval, stop, integrator_cpu))
    )
    integrating.start()
    committed: list[tuple[str, float, float]] = []
    writer_cpu = backend_cpu = 0.0
    try:
        if per_transaction == 1:
            per_thread = total // (processes * threads)
            start_at = time.time() + (2.0 if processes > 1 else 0.0)
            key_dir = None if data_dir is None else str(data_dir)
            if processes == 1:
                committed, writer_cpu, backend_cpu = _writer_process(
                    database_url, threads, per_thread, "p0", start_at, key_dir
                )
            else:
                # Separate processes, as separate server workers are: Python threads alone
                # would measure the interpreter lock.
                context = multiprocessing.get_context("spawn")
                with context.Pool(processes) as pool:
                    jobs = [
                        pool.apply_async(
                            _writer_process,
                            (database_url, threads, per_thread, f"p{n}", start_at, key_dir),
                        )
                        for n in range(processes)
                    ]
                    for job in jobs:
                        done, cpu, backend = job.get()
                        committed.extend(done)
                        writer_cpu += cpu
                        backend_cpu += backend
        else:
            writing = make_engine(database_url)
            writer_backends = track_backends(writing)
            writers = make_sessionmaker(writing)
            began_cpu = time.thread_time()
            for t in range(total // per_transaction):
                records = [
                    ("user:1", READ_ACTION, f"request:b{t}-{k}", {"k": k})
                    for k in range(per_transaction)
                ]
                began = time.time()
                with writers() as session:
                    audit.append_many(session, records)  # type: ignore[arg-type]
                    session.commit()
                ended = time.time()
                committed.extend((subject, began, ended) for _, _, subject, _ in records)
            writer_cpu = time.thread_time() - began_cpu
            backend_cpu = process_cpu(writer_backends)
            writing.dispose()
    finally:
        stop.set()
        integrating.join()
    integrator_backend_cpu = process_cpu(integrator_backends)
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
        # Publishing transactions integrate their own entries before they commit (no lag).
        assert integrator.has_pending(session) is False, "an entry was not integrated"
    engine.dispose()
    if data_dir is None:
        assert len(lags) == len(committed), "an entry was not integrated"
    count = len(committed)
    return AppendRun(
        per_second=count / elapsed,
        lags_ms=lags,
        writer_ms=writer_cpu * 1000 / count,
        writer_backends_ms=backend_cpu * 1000 / count,
        integrator_ms=sum(integrator_cpu) * 1000 / count,
        integrator_backend_ms=integrator_backend_cpu * 1000 / count,
    )


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
    with server_processes(database_url, data_dir, workers) as (url, _):
        yield url


@contextmanager
def server_processes(
    database_url: str, data_dir: Path, workers: int = 1
) -> Iterator[tuple[str, list[int]]]:
    """The real server on a loopback port: its URL and the pids of the processes serving."""
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
        found = subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True)
        yield url, [int(pid) for pid in found.stdout.split()] or [process.pid]


@contextmanager
def database(kind: str, postgres: str | None, scratch: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{scratch / 'bench.sqlite3'}"
        return
    assert postgres
    with fresh_database(postgres) as url:
        yield url


def run(kind: str, args: argparse.Namespace, scratch: Path) -> dict[str, str]:
    results: dict[str, str] = {}
    with database(kind, args.postgres, scratch) as url:
        upgrade(url)
        loaded = bulk_load(url, args.entries)
        results["bulk load (not a target)"] = f"{loaded:.0f} s"
        progress(f"{kind}: appends")
        one = appends(url, args.appends // 4, 1, 1)
        results["durable appends/s, 1 writer, 1 per tx"] = f"{one.per_second:,.0f}"
        results["  CPU ms/append = writers (+ PG) + integrator (+ PG)"] = one.cpu_row()
        for count in args.writers:
            threads = max(1, count // args.processes)
            writers = threads * args.processes
            many = appends(url, args.appends * 5, args.processes, threads)
            results[f"durable appends/s, {writers} writers, 1 per tx"] = f"{many.per_second:,.0f}"
            results[f"  CPU ms/append, {writers} writers"] = many.cpu_row()
            p50, p99 = percentiles(many.lags_ms)
            results[f"integration lag, {writers} writers, p50 / p99"] = f"{p50:.0f} / {p99:.0f} ms"
        batched = appends(url, args.appends * 5, 1, 1, 100)
        results["durable appends/s, 1 writer, 100 per tx (append_many)"] = (
            f"{batched.per_second:,.0f}"
        )
        results["  CPU ms/append, append_many"] = batched.cpu_row()
        # The server's data dir (its log key) from here on: the lifecycle appends publish
        # checkpoints, and the proofs and the verification below check them with this key.
        data_dir = scratch / f"data-{kind}"
        threads = max(1, args.writers[-1] // args.processes)
        writers = threads * args.processes
        lifecycle = appends(url, args.appends, args.processes, threads, data_dir=data_dir)
        results[f"lifecycle appends/s, {writers} writers, checkpoint per tx"] = (
            f"{lifecycle.per_second:,.0f}"
        )
        results[f"  CPU ms/append, lifecycle, {writers} writers"] = lifecycle.cpu_row()
        if args.appends_only:
            return results
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
        token = auditor_token(factory)
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


def _counts(text: str) -> list[int]:
    """A comma-separated list of counts, each at least 1 ("8,32")."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"each count must be at least 1: {text!r}")
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--appends", type=int, default=2000)
    parser.add_argument("--proofs", type=int, default=2000)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("PORCHLIGHT_TEST_POSTGRES_URL"),
        help="a PostgreSQL server URL; a fresh database is made on it and dropped afterwards"
        " (default: $PORCHLIGHT_TEST_POSTGRES_URL; without either, PostgreSQL is skipped)",
    )
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument(
        "--workers", type=int, default=1, help="uvicorn processes serving the proofs and tiles"
    )
    parser.add_argument(
        "--verify-reads", type=int, default=8, help="the verifier's parallel HTTP reads"
    )
    parser.add_argument(
        "--writers",
        type=_counts,
        default=[8, 32],
        help="concurrent single-entry writers, one run per count, comma-separated (default: 8,32;"
        " the lifecycle appends use the last count). A server process's routes share 15"
        " connections, so 32 writers in 2 processes queue for them, as 16 concurrent requests"
        " a worker would",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 2,
        help="processes the writers run in (default: one per CPU, as a server runs a worker"
        " per CPU; more processes than cores add CPU per append in context switches)",
    )
    parser.add_argument(
        "--appends-only", action="store_true", help="stop after the append measurements"
    )
    args = parser.parse_args()
    for name in ("appends", "proofs", "workers", "verify_reads", "processes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.entries < 0:
        parser.error("--entries cannot be negative")
    kinds = [k for k in ("sqlite", "postgresql") if args.only in (None, k)]
    if "postgresql" in kinds and not args.postgres:
        if args.only == "postgresql":
            parser.error(
                "--only postgresql needs a server: give --postgres URL or set"
                " PORCHLIGHT_TEST_POSTGRES_URL"
            )
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
