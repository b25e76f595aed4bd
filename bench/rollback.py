"""What a refused request costs the requests after it, with psycopg's rollback and with the app's.

Every request answered with a 4xx rolls its transaction back. psycopg's own rollback() forgets
every statement it has prepared in the session (and sends DEALLOCATE ALL); the app's engines
send a plain ROLLBACK instead (`app.db`), which keeps them. This bench times pairs of requests
on one pooled session, as a server sees them when refusals are mixed in: a refused one (a
token lookup, then ROLLBACK) and a served one (the device's open asks, the steady poll's
read, then COMMIT), --pairs times after 50 unmeasured, each way, alternated --repeat times.
It prints the client thread's CPU, the PostgreSQL backend's CPU (from /proc) and the wall
time per pair.

    .venv/bin/python bench/rollback.py [--pairs 2000] [--repeat 2]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

A fresh database is made on the server and dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import bindparam, text

from app.db import make_engine, make_sessionmaker
from app.migrate import upgrade
from app.requests.poll_fast import _open_asks
from bench.common import fresh_database, positive


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def pairs(url: str, count: int, keep: bool) -> tuple[float, float, float]:
    """(client CPU, PostgreSQL CPU, wall) microseconds per refused + served pair."""
    engine = make_engine(url)
    if not keep:
        del engine.dialect.do_rollback  # the dialect's own: psycopg's rollback()
    factory = make_sessionmaker(engine)
    token = text("SELECT id FROM users WHERE id = :id")
    asks = _open_asks(bindparam("device_id"))
    try:
        with engine.connect() as connection:
            pid = connection.scalar(text("SELECT pg_backend_pid()"))

        def pair() -> None:
            with factory() as session:  # refused
                session.execute(token, {"id": 1})
                session.rollback()
            with factory() as session:  # served
                session.execute(asks, {"device_id": 1}).all()
                session.commit()

        for _ in range(50):
            pair()
        database, cpu, wall = backend_cpu(pid), time.thread_time(), time.perf_counter()
        for _ in range(count):
            pair()
        return (
            (time.thread_time() - cpu) * 1e6 / count,
            (backend_cpu(pid) - database) * 1e6 / count,
            (time.perf_counter() - wall) * 1e6 / count,
        )
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=positive, default=2000, help="pairs timed per run")
    parser.add_argument("--repeat", type=positive, default=2, help="runs each way")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "PORCHLIGHT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server URL (default: $PORCHLIGHT_TEST_POSTGRES_URL or the local one)",
    )
    args = parser.parse_args()
    rows = []
    with fresh_database(args.postgres) as url:
        upgrade(url)
        for _ in range(args.repeat):
            for label, keep in (("psycopg's rollback()", False), ("plain ROLLBACK, the app", True)):
                rows.append((label, *pairs(url, args.pairs, keep)))
                print(f"{label}: {rows[-1][1:]}", file=sys.stderr)
    print(f"\n{args.pairs} pairs (refused, then served) on one pooled session, per pair\n")
    print("| rollback | client CPU | PostgreSQL CPU | wall |")
    print("|---|---:|---:|---:|")
    for label, client, database, wall in rows:
        print(f"| {label} | {client:,.0f} us | {database:,.0f} us | {wall:,.0f} us |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
