"""Appending to the log, inside the caller's transaction.

`append` encodes the entry (docs/log-format.md; its bytes hold no index) and inserts it into
`log_pending` with the caller's change: it commits durably with that change or rolls back with
it, and it takes no lock, so concurrent writers in any number of processes never wait for one
another. The entry gets its index and its place in the Merkle tree shortly after, from
`app.audit.integrator.integrate` (the background loop of every server process, and every
checkpoint publication). It flushes and never commits.

A request-lifecycle action marks the transaction so that, as it commits, a signed checkpoint is
published (app.log.checkpoints): that publication integrates first, in the same transaction, so
the checkpoint includes the change's own entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, Dialect, Table, func, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler

from app.audit.entry import JSONValue, encode_entry, leaf_hash
from app.audit.models import LogEntry, LogHead, PendingEntry
from app.db import utcnow
from app.log import checkpoints


class Sequenced(NamedTuple):
    """What `append` made: the entry's place in line for integration (not yet its index)."""

    seq: int
    action: str
    subject: str
    leaf_hash: bytes


_PENDING = cast(Table, PendingEntry.__table__)
_COLUMNS = ("created_at", "actor", "action", "subject", "entry", "leaf_hash")


class _CompiledInsert(NamedTuple):
    sql: str
    # Parameter names in the driver's order (qmark, SQLite), or None (named, psycopg).
    positions: Sequence[str] | None
    # Each column's type conversion for the driver (e.g. UTC text for SQLite), or None.
    convert: dict[str, Callable[[Any], Any] | None]


_COMPILED: dict[tuple[str, str, str], _CompiledInsert] = {}


def _compiled_insert(dialect: Dialect) -> _CompiledInsert:
    """INSERT INTO log_pending ... RETURNING seq, compiled once per database and driver."""
    key = (dialect.name, dialect.driver, dialect.paramstyle)
    found = _COMPILED.get(key)
    if found is None:
        compiled = (
            insert(_PENDING)
            .returning(_PENDING.c.seq)
            .compile(dialect=dialect, column_keys=list(_COLUMNS))
        )
        assert isinstance(compiled, SQLCompiler)
        found = _CompiledInsert(
            compiled.string,
            compiled.positiontup,
            {
                name: _PENDING.c[name].type.dialect_impl(dialect).bind_processor(dialect)
                for name in _COLUMNS
            },
        )
        _COMPILED[key] = found
    return found


def _insert_pending(connection: Connection, row: dict[str, object]) -> int:
    """Run the one INSERT of an append on the transaction's DBAPI cursor: the same statement
    SQLAlchemy would send, without its per-execution bookkeeping (several times the driver's
    own CPU for this one-row statement). Driver errors still surface as SQLAlchemy's."""
    statement = _compiled_insert(connection.dialect)
    values: dict[str, object] = {}
    for name, convert in statement.convert.items():
        values[name] = row[name] if convert is None else convert(row[name])
    arguments: Any = (
        [values[name] for name in statement.positions] if statement.positions else values
    )
    dbapi = connection.dialect.loaded_dbapi
    cursor = connection.connection.cursor()
    try:
        cursor.execute(statement.sql, arguments)
        fetched = cursor.fetchone()
    except dbapi.Error as error:
        raise DBAPIError.instance(statement.sql, arguments, error, dbapi.Error) from error
    finally:
        cursor.close()
    assert fetched is not None
    return int(fetched[0])


def entry_row(
    moment: datetime,
    actor: str,
    action: str,
    subject: str,
    details: dict[str, JSONValue] | None = None,
) -> dict[str, object]:
    """The columns of one entry (encoded bytes and leaf hash included), as appends insert
    them into `log_pending` and a bulk load, given an "index", into `log_entries`."""
    data = encode_entry(moment, actor, action, subject, details or {})
    return {
        "created_at": moment,
        "actor": actor,
        "action": action,
        "subject": subject,
        "entry": data,
        "leaf_hash": leaf_hash(data),
    }


def append(
    session: Session,
    actor: str,
    action: str,
    subject: str,
    details: dict[str, JSONValue] | None = None,
    *,
    now: datetime | None = None,
) -> Sequenced:
    """Append one entry (actor "user:3", action "invite:create", subject "invite:5")."""
    row = entry_row(now or utcnow(), actor, action, subject, details)
    # The caller's own changes first, as an ORM add would; then one plain INSERT, compiled
    # once (an ORM add and flush would cost several times the CPU of the rest of an append).
    session.flush()
    seq = _insert_pending(session.connection(), row)
    checkpoints.mark_pending(session, action)
    return Sequenced(seq, action, subject, cast(bytes, row["leaf_hash"]))


def append_many(
    session: Session,
    records: Sequence[tuple[str, str, str, dict[str, JSONValue] | None]],
    *,
    now: datetime | None = None,
) -> int:
    """Append (actor, action, subject, details) records as entries, in order.

    The same entries as calling `append` for each, in one insert: for work that logs many
    events at once. Returns how many it appended.
    """
    moment = now or utcnow()
    rows = [entry_row(moment, *record) for record in records]
    if not rows:
        return 0
    session.flush()
    # One executemany: rows are inserted one after another, so `seq` follows the list.
    session.connection().execute(insert(_PENDING), rows)
    for _, action, _, _ in records:
        checkpoints.mark_pending(session, action)
    return len(rows)


def size(session: Session) -> int:
    """The number of integrated entries (the tree size) this transaction sees."""
    return session.execute(select(LogHead.size).where(LogHead.id == 1)).scalar_one()


def pending(session: Session) -> int:
    """The number of committed (or this transaction's own) entries not integrated yet."""
    return session.execute(select(func.count()).select_from(PendingEntry)).scalar_one()


def entries(session: Session, start: int, limit: int) -> Sequence[LogEntry]:
    """Integrated entries start..start+limit-1 in index order."""
    query = select(LogEntry).where(LogEntry.index >= start).order_by(LogEntry.index)
    return session.execute(query.limit(limit)).scalars().all()
