"""The log's storage: sequenced entries waiting to be integrated, entries numbered 0..n-1 without
gaps, and a one-row head holding n (see app.audit.service for how an entry moves from one to the
other)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime

# SQLite hands out ids automatically only for an INTEGER PRIMARY KEY (its 64-bit rowid).
_SEQ = BigInteger().with_variant(Integer(), "sqlite")


class PendingEntry(Base):
    """An entry committed with its change but not yet in the tree: no index yet.

    `seq` orders entries by insertion. SQLite's AUTOINCREMENT keeps it from reusing the number
    of an entry integrated (and deleted from here) already, as a plain rowid would.
    """

    __tablename__ = "log_pending"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012 (SQLAlchemy reads it)

    seq: Mapped[int] = mapped_column(_SEQ, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(100))
    entry: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogEntry(Base):
    __tablename__ = "log_entries"

    # Position in the log (the Merkle tree's leaf index), assigned by the integrator under the
    # head's lock.
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(100), index=True)
    # The canonical bytes that are hashed; the columns above are copies for querying.
    entry: Mapped[bytes] = mapped_column(LargeBinary)
    # RFC 6962 section 2.1: SHA-256(0x00 || entry).
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    # The PendingEntry.seq it was integrated from (NULL for entries older than sequencing):
    # unique, so the database itself refuses to integrate one pending entry twice.
    seq: Mapped[int | None] = mapped_column(BigInteger, unique=True, nullable=True)


class LogHead(Base):
    """Exactly one row (id 1): the log size. Integrators lock it to serialise."""

    __tablename__ = "log_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
