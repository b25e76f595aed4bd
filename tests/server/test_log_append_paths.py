"""The log's fast paths store exactly what the plain SQLAlchemy paths would.

`app.audit.service.append` runs its INSERT on the DBAPI cursor with a statement compiled once,
and `app.audit.integrator.integrate` moves entries with INSERT ... SELECT inside the database and
stores nodes with one statement per batch; these tests hold them to the slower paths they
replace, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import exc, select, text
from sqlalchemy.orm import Session

from app.audit import integrator
from app.audit import service as audit
from app.audit.models import LogEntry, PendingEntry
from app.db import make_engine, make_sessionmaker
from app.log.models import LogTreeNode
from porchlight.tlog.merkle import complete_levels

MOMENT = datetime(2026, 11, 23, 2, 40, 5, 123456, tzinfo=UTC)


def _raw_pending(session: Session) -> list[tuple[object, ...]]:
    """log_pending as the driver returns it (no SQLAlchemy type conversion): on SQLite the
    stored text of created_at, on PostgreSQL the timestamptz."""
    query = text(
        "SELECT created_at, actor, action, subject, entry, leaf_hash FROM log_pending ORDER BY seq"
    )
    return [tuple(row) for row in session.execute(query)]


def test_append_stores_the_columns_a_core_insert_stores(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            first = audit.append(
                session, "user:7", "invite:create", "invite:9", {"n": 1}, now=MOMENT
            )
            # append_many inserts through SQLAlchemy's own executemany (types converted by it).
            records = [("user:7", "invite:create", "invite:9", {"n": 1})]
            audit.append_many(session, records, now=MOMENT)  # type: ignore[arg-type]
            session.commit()
            fast, core = _raw_pending(session)
            stored = session.scalars(select(PendingEntry).order_by(PendingEntry.seq)).all()
        # The same stored form, column by column; only the salt inside the entry differs.
        assert fast[:4] == core[:4]
        assert [type(value) for value in fast] == [type(value) for value in core]
        assert stored[0].seq == first.seq < stored[1].seq
        assert stored[0].created_at == MOMENT == stored[1].created_at
        assert bytes(stored[0].leaf_hash) == first.leaf_hash
        assert fast[5] is not None and core[5] is not None
    finally:
        engine.dispose()


def test_driver_errors_from_append_are_sqlalchemy_errors(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            # Transactional DDL on both databases: rolled back below.
            session.execute(text("DROP TABLE log_pending"))
            with pytest.raises(exc.DBAPIError):
                audit.append(session, "system", "invite:create", "invite:1")
            session.rollback()
        with make_sessionmaker(engine)() as session:
            audit.append(session, "system", "invite:create", "invite:1")
            session.commit()
            assert audit.pending(session) == 1
    finally:
        engine.dispose()


def _assert_tree_matches_entries(session: Session) -> list[str]:
    entries = session.execute(
        select(LogEntry.index, LogEntry.subject, LogEntry.leaf_hash).order_by(LogEntry.index)
    ).all()
    assert [index for index, _, _ in entries] == list(range(len(entries)))
    nodes = {
        (level, index): bytes(value)
        for level, index, value in session.execute(
            select(LogTreeNode.level, LogTreeNode.index, LogTreeNode.hash)
        )
    }
    levels = complete_levels([bytes(value) for _, _, value in entries])
    assert nodes == {
        (level, index): value
        for level, hashes in enumerate(levels)
        for index, value in enumerate(hashes)
    }
    return [subject for _, subject, _ in entries]


def test_batches_move_entries_nodes_and_pending_rows_exactly(database_url: str) -> None:
    engine = make_engine(database_url)
    factory = make_sessionmaker(engine)
    try:
        with factory() as session:
            start = integrator.integrate_all(session)
            session.commit()
        for batch in range(4):
            with factory() as session:
                for number in range(batch * 5, batch * 5 + 5):
                    audit.append(session, "system", "invite:create", f"invite:{number}")
                session.commit()
            with factory() as session:
                # Batches of 2 leave odd subtrees open across transactions.
                while integrator.integrate(session, limit=2):
                    pass
                session.commit()
        with factory() as session:
            subjects = _assert_tree_matches_entries(session)
            assert subjects[start:] == [f"invite:{number}" for number in range(20)]
            assert audit.pending(session) == 0
    finally:
        engine.dispose()


@pytest.mark.postgresql_only  # on SQLite an open writer holds the only write lock
def test_an_entry_committed_late_with_a_lower_seq_is_not_lost(database_url: str) -> None:
    """A writer that took its seq first but commits after a later one's entry was integrated:
    the batch must take (and delete from log_pending) exactly the rows it copied, not a range
    of seq, and the late entry gets the next index."""
    engine = make_engine(database_url)
    factory = make_sessionmaker(engine)
    try:
        with factory() as session:
            start = integrator.integrate_all(session)
            session.commit()
        with factory() as early, factory() as late:
            first = audit.append(early, "system", "invite:create", "invite:early")
            second = audit.append(late, "system", "invite:create", "invite:late")
            assert first.seq < second.seq
            late.commit()
            with factory() as session:
                assert integrator.integrate(session) == range(start, start + 1)
                session.commit()
            early.commit()
        with factory() as session:
            assert audit.pending(session) == 1
            assert integrator.integrate(session) == range(start + 1, start + 2)
            session.commit()
            subjects = _assert_tree_matches_entries(session)
            assert subjects[start:] == ["invite:late", "invite:early"]
            assert audit.pending(session) == 0
    finally:
        engine.dispose()
