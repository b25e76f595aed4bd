"""The verifiable log's stored state: tree nodes, published checkpoints, auditors, cosignatures.

Why a node table (and not stored tiles): `log_tree_nodes` holds every complete subtree hash,
the leaf hashes (level 0) included, written by `app.audit.service.append` in the same
transaction as the entry. Each append adds on average two rows (at most log2 n + 1), inserts
never rewrite rows (so concurrent readers see only finished hashes), an inclusion or
consistency proof reads at most 2*log2(n) rows by primary key, and a tlog-tiles tile is a
contiguous range of one level (level 8L) read in one query. Stored tiles would need partial
tiles rewritten on every append and would still need per-level reads for proofs.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    ForeignKey,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime


class LogTreeNode(Base):
    """The hash of the complete subtree over leaves [index * 2**level, (index + 1) * 2**level)."""

    __tablename__ = "log_tree_nodes"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    index: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogCheckpoint(Base):
    """A published, signed checkpoint (c2sp tlog-checkpoint); at most one per tree size."""

    __tablename__ = "log_checkpoints"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger, unique=True)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    # The signed note exactly as served (body + blank line + the log's signature line).
    note: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class LogAuditor(Base):
    """An auditor's registered cosigner (witness) key (c2sp tlog-cosignature)."""

    __tablename__ = "log_auditors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # The key name as it appears on signature lines, unique so lines are unambiguous.
    name: Mapped[str] = mapped_column(String(200), unique=True)
    verifier_key: Mapped[str] = mapped_column(String(400), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # The last checkpoint this auditor cosigned: the next must be consistent with it.
    last_size: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_root: Mapped[bytes | None] = mapped_column(LargeBinary(32), nullable=True)


class LogCosignature(Base):
    """One auditor's cosignature on one published checkpoint."""

    __tablename__ = "log_cosignatures"
    __table_args__ = (UniqueConstraint("checkpoint_id", "auditor_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("log_checkpoints.id"), index=True)
    auditor_id: Mapped[int] = mapped_column(ForeignKey("log_auditors.id"), index=True)
    # The note signature line ("— name base64"), appended to the checkpoint when served.
    signature_line: Mapped[str] = mapped_column(Text)
    # The cosignature's own timestamp (seconds since the epoch, signed by the auditor).
    timestamp: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
