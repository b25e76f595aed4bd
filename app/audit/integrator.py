"""Integration: giving sequenced entries their index and putting them in the Merkle tree.

`app.audit.service.append` only inserts a `log_pending` row in the caller's transaction, so the
entry commits (durably) with the change it records, or rolls back with it, and writers never
wait for one another. `integrate` then, in one short transaction of its own:

1. locks the single `log_head` row (PostgreSQL: SELECT ... FOR UPDATE, or with SKIP LOCKED for
   the background loop, so integrators in several server processes never queue behind each
   other; SQLite: the transaction began IMMEDIATE and holds the database write lock);
2. takes up to `BATCH` committed pending rows in `seq` (insertion) order and copies them into
   `log_entries` as indexes size, size+1, ... (one INSERT ... SELECT inside the database);
3. stores the tree nodes they complete, deletes exactly those pending rows and bumps the size.

Why nothing is skipped or indexed twice: a pending row leaves `log_pending` only in the
transaction that inserts it into `log_entries`, under the head lock, so an integrator that waits
for the lock sees the previous one's work (READ COMMITTED takes a new snapshot per statement);
a row committed after step 2 read the table is simply picked up by the next round; and
`log_entries.seq` is unique, so the database refuses a second copy. Index order is integration
order, which need not be commit order or `seq` order; that is all a log promises.

Who integrates: every server process every `log_integrate_interval_seconds`
(`integrate_periodically`, started by app.main), and checkpoint publication, which integrates
everything it can see first (app.log.checkpoints), so the checkpoint published when a
request-lifecycle change commits includes that change's entry.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import exists, select, text
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.audit.models import LogHead, PendingEntry
from app.log import tree

_logger = logging.getLogger(__name__)

# Entries per integration transaction: large enough to keep up with thousands of appends a
# second at a 0.2 s interval, small enough that one transaction stays short.
BATCH = 2000

# Steps 2-3 run inside the database, so an entry's bytes never travel to Python and back, and a
# batch costs a few statements instead of one row-by-row executemany per table.
# The first `limit` pending rows in seq order become entries size, size+1, ... (row_number
# over seq: the same numbering whatever order the rows are written in); it returns what the
# tree and the clean-up need.
_MOVE = text(
    'INSERT INTO log_entries ("index", seq, created_at, actor, action, subject, entry, leaf_hash)'
    " SELECT :size - 1 + row_number() OVER (ORDER BY seq),"
    " seq, created_at, actor, action, subject, entry, leaf_hash"
    " FROM (SELECT * FROM log_pending ORDER BY seq LIMIT :limit) AS taken"
    ' RETURNING "index", seq, leaf_hash'
)
# The pending rows just copied, by seq (not a seq range: one committed meanwhile may fall
# inside it). PostgreSQL: the seqs as one array, planned as primary-key lookups. (Selecting
# them as "entries at and above the old size", as on SQLite, is exact under the head lock too,
# but once psycopg prepares the statement, PostgreSQL's generic plan assumes `"index" >= $1`
# matches a third of log_entries and hash-joins it with a scan of all of log_pending, dead
# rows included.)
_DROP_MOVED_POSTGRESQL = text("DELETE FROM log_pending WHERE seq = ANY(CAST(:seqs AS bigint[]))")
_DROP_MOVED_SQLITE = text(
    'DELETE FROM log_pending WHERE seq IN (SELECT seq FROM log_entries WHERE "index" >= :size)'
)
# PostgreSQL: a batch's new tree nodes (about two per entry) as three arrays, one statement.
_SET_SIZE = text("UPDATE log_head SET size = :size WHERE id = 1")


def integrate(session: Session, *, limit: int = BATCH, wait: bool = True) -> range:
    """Integrate up to `limit` pending entries; returns the indexes they got (maybe none).

    With `wait=False` it returns an empty range at once if another transaction holds the head.
    Flushes, never commits: the caller commits (and so releases the head lock).
    """
    session.flush()
    lock = select(LogHead.size).where(LogHead.id == 1).with_for_update(skip_locked=not wait)
    size = session.execute(lock).scalar_one_or_none()
    if size is None:
        return range(0)
    connection = session.connection()
    moved = sorted(connection.execute(_MOVE, {"size": size, "limit": limit}).all())
    if not moved:
        return range(size, size)
    tree.store_leaves(session, size, [bytes(value) for _, _, value in moved])
    if connection.dialect.name == "postgresql":
        connection.execute(_DROP_MOVED_POSTGRESQL, {"seqs": [seq for _, seq, _ in moved]})
    else:
        connection.execute(_DROP_MOVED_SQLITE, {"size": size})
    connection.execute(_SET_SIZE, {"size": size + len(moved)})
    return range(size, size + len(moved))


def integrate_all(session: Session) -> int:
    """Wait for the head lock and integrate every pending entry this transaction sees (its
    own included); returns the log size. The lock is held until the caller commits."""
    while True:
        batch = integrate(session)
        if len(batch) < BATCH:
            return batch.stop
        # A full batch: there may be more.


def has_pending(session: Session) -> bool:
    return bool(session.scalar(select(exists().select_from(PendingEntry))))


def catch_up(session: Session) -> None:
    """For readers that show the log's entries: integrate what is pending first (waiting for
    the head if another integrator has it), so an entry committed before the read is listed.
    Costs one plain read when nothing is pending."""
    if has_pending(session):
        integrate_all(session)


def integrate_pending(factory: sessionmaker[Session], *, wait: bool = False) -> int:
    """One background round: integrate what is pending, a batch per transaction; unless `wait`,
    nothing while another process is integrating. Returns how many entries it integrated."""
    total = 0
    with factory() as session:
        # A plain read first: an idle log costs no lock and no write.
        if not has_pending(session):
            # Ended by COMMIT, not by closing the session, which rolls back: psycopg forgets
            # every statement it prepared in a session on ROLLBACK (and deallocates them on the
            # server), so an idle round, five a second in each worker, made the poll fast path
            # re-plan its statement on the next calls in that session: 4 to 11 % of steady
            # polls were planned afresh, planning being 29 % of the statement's time.
            session.commit()
            return 0
        while True:
            batch = integrate(session, wait=wait)
            session.commit()
            total += len(batch)
            if len(batch) < BATCH:
                return total


async def integrate_periodically(factory: sessionmaker[Session], interval_seconds: float) -> None:
    """Every `interval_seconds`, integrate pending entries; for the life of the server process.
    A failed round is logged and retried next round: the entries wait in `log_pending`."""
    while True:
        await asyncio.sleep(interval_seconds)
        await integrate_safely(factory)


async def integrate_safely(factory: sessionmaker[Session], *, wait: bool = False) -> int:
    try:
        return await run_in_threadpool(lambda: integrate_pending(factory, wait=wait))
    except Exception:
        _logger.exception("integrating log entries failed")
        return 0
