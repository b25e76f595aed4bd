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

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.orm import Session

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
_INSERT_PENDING = insert(_PENDING).returning(_PENDING.c.seq)


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
    # The caller's own changes first, as an ORM add would; then one plain INSERT, built once
    # (an ORM add and flush would cost several times the CPU of the rest of an append).
    session.flush()
    seq = session.connection().scalar(_INSERT_PENDING, row)
    checkpoints.mark_pending(session, action)
    assert seq is not None
    return Sequenced(int(seq), action, subject, cast(bytes, row["leaf_hash"]))


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
