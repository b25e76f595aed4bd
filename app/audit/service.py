"""Appending to the log, inside the caller's transaction.

`append` locks the single log_head row (SELECT ... FOR UPDATE on PostgreSQL; on SQLite the
transaction already holds the database write lock because it began IMMEDIATE), takes the size
as the new entry's index, inserts the entry and bumps the size. The lock is held until the
caller's transaction ends, so concurrent writers in any number of processes get consecutive
indexes in commit order and a rolled-back change leaves no entry and no gap. It flushes and
never commits: the change and its entry commit together or not at all.

Under the same lock it stores the Merkle tree's new hashes (app.log.tree.store_leaves), and a
request-lifecycle action marks the transaction so a signed checkpoint is published when it
commits (app.log.checkpoints).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from app.audit.entry import JSONValue, encode_entry, leaf_hash
from app.audit.models import LogEntry, LogHead
from app.db import utcnow
from app.log import checkpoints, tree


def append(
    session: Session,
    actor: str,
    action: str,
    subject: str,
    details: dict[str, JSONValue] | None = None,
    *,
    now: datetime | None = None,
) -> LogEntry:
    """Append one entry (actor "user:3", action "invite:create", subject "invite:5")."""
    moment = now or utcnow()
    entry_bytes = encode_entry(moment, actor, action, subject, details or {})
    head = session.execute(select(LogHead).where(LogHead.id == 1).with_for_update()).scalar_one()
    entry = LogEntry(
        index=head.size,
        created_at=moment,
        actor=actor,
        action=action,
        subject=subject,
        entry=entry_bytes,
        leaf_hash=leaf_hash(entry_bytes),
    )
    session.add(entry)
    head.size += 1
    session.flush()
    tree.store_leaves(session, entry.index, [entry.leaf_hash])
    checkpoints.mark_pending(session, action)
    return entry


def append_many(
    session: Session,
    records: Sequence[tuple[str, str, str, dict[str, JSONValue] | None]],
    *,
    now: datetime | None = None,
) -> range:
    """Append (actor, action, subject, details) records as consecutive entries, in order.

    The same entries as calling `append` for each, for a fraction of the round trips (one
    lock, one insert of entries, one of tree nodes): for work that logs many events at once.
    Returns the entries' indexes.
    """
    moment = now or utcnow()
    encoded = [
        (actor, action, subject, encode_entry(moment, actor, action, subject, details or {}))
        for actor, action, subject, details in records
    ]
    head = session.execute(select(LogHead).where(LogHead.id == 1).with_for_update()).scalar_one()
    start = head.size
    if not encoded:
        return range(start, start)
    rows = [
        {
            "index": start + offset,
            "created_at": moment,
            "actor": actor,
            "action": action,
            "subject": subject,
            "entry": data,
            "leaf_hash": leaf_hash(data),
        }
        for offset, (actor, action, subject, data) in enumerate(encoded)
    ]
    session.connection().execute(insert(LogEntry), rows)
    head.size = start + len(rows)
    session.flush()
    tree.store_leaves(session, start, [row["leaf_hash"] for row in rows])  # type: ignore[misc]
    for _, action, _, _ in encoded:
        checkpoints.mark_pending(session, action)
    return range(start, start + len(rows))


def size(session: Session) -> int:
    """The number of committed-or-pending entries visible to this transaction."""
    return session.execute(select(LogHead.size).where(LogHead.id == 1)).scalar_one()


def entries(session: Session, start: int, limit: int) -> Sequence[LogEntry]:
    """Entries start..start+limit-1 in index order."""
    return (
        session.execute(
            select(LogEntry).where(LogEntry.index >= start).order_by(LogEntry.index).limit(limit)
        )
        .scalars()
        .all()
    )
