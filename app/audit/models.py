"""The log's storage: entries numbered 0..n-1 without gaps, and a one-row head holding n."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class LogEntry(Base):
    __tablename__ = "log_entries"

    # Position in the log (the Merkle tree's leaf index), assigned under the head's lock.
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(64), index=True)
    subject: Mapped[str] = mapped_column(String(100), index=True)
    # The canonical bytes that are hashed; the columns above are copies for querying.
    entry: Mapped[bytes] = mapped_column(LargeBinary)
    # RFC 6962 section 2.1: SHA-256(0x00 || entry).
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogHead(Base):
    """Exactly one row (id 1): the log size. Appenders lock it to serialise."""

    __tablename__ = "log_head"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
