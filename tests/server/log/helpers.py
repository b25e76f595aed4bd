"""Shared helpers for the verifiable-log tests: filling a log through the real append path,
running the real `porchlight` CLI, and editing the database as an attacker would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.accounts import service as accounts
from app.accounts.passwords import make_hasher
from app.audit import integrator
from app.audit import service as audit
from app.audit.entry import encode_entry, leaf_hash
from app.audit.models import LogEntry, LogHead
from app.db import make_engine, make_sessionmaker, utcnow
from app.log import checkpoints, tree
from app.log.keys import LogSigner, load_or_create
from app.log.models import LogCheckpoint, LogCosignature, LogTreeNode
from app.permissions import Role
from app.settings import Settings
from tests.server.live import REPO

# The entry point as installed (`python -m porchlight.cli` would load the module twice).
PORCHLIGHT = [sys.executable, "-c", "import sys; from porchlight.cli import main; sys.exit(main())"]

ACTIONS = ("request:submit", "ask:create", "ask:consent", "clip:download", "invite:create")


def fill(session: Session, count: int, *, tag: str = "a") -> None:
    """Append `count` varied entries through app.audit.service.append (the real path), then
    integrate them (as the server's integrator would within its interval)."""
    for number in range(count):
        action = ACTIONS[number % len(ACTIONS)]
        audit.append(
            session,
            f"user:{number % 7 + 1}",
            action,
            f"request:{number // 10}",
            {"n": number, "tag": tag},
        )
    integrator.integrate_all(session)


def integrate_log(where: FastAPI | sessionmaker[Session] | str) -> int:
    """Integrate every committed pending entry now, in a transaction of its own: for tests that
    read the log (indexes, tree, tiles) right after a change, instead of waiting for the
    server's background integrator. `where` is an app, a sessionmaker or a database URL.
    Returns the log size."""
    if isinstance(where, str):
        engine = make_engine(where)
        try:
            return integrate_log(make_sessionmaker(engine))
        finally:
            engine.dispose()
    factory = where.state.sessionmaker if isinstance(where, FastAPI) else where
    with factory() as session:
        size = integrator.integrate_all(session)
        session.commit()
        return size


def fill_database(database_url: str, count: int) -> None:
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            fill(session, count)
            session.commit()
    finally:
        engine.dispose()


def auditor_token(
    database_url: str, username: str = "auditor-cli", role: Role = Role.auditor
) -> str:
    """Create an auditor (or a person of another agency-less `role`) and an API token for
    them, through the real services: two log entries."""
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            auditor = accounts.create_user(
                session,
                make_hasher(1, 1024),
                username=username,
                password="lantern-cli-quiet-harbour",
                role=role,
                agency_id=None,
                actor="system",
                now=utcnow(),
            )
            _, token = accounts.create_api_token(session, auditor, "audit cli", utcnow())
            session.commit()
            return token
    finally:
        engine.dispose()


def signer_for(data_dir: Path, database_url: str) -> LogSigner:
    return load_or_create(Settings(data_dir=data_dir, database_url=database_url))


def porchlight(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORCHLIGHT_")}
    if data_dir is not None:
        env["PORCHLIGHT_DATA_DIR"] = str(data_dir)
    return subprocess.run(
        [*PORCHLIGHT, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )


def _move(session: Session, first: int, shift: int) -> None:
    """Renumber entries >= first by `shift`, in two steps so no primary key collides."""
    session.execute(
        update(LogEntry).where(LogEntry.index >= first).values(index=-LogEntry.index - 1)
    )
    session.execute(
        update(LogEntry).where(LogEntry.index < 0).values(index=-LogEntry.index - 1 + shift)
    )
    # Objects already loaded still carry their old index as identity: forget them.
    session.expunge_all()


def tamper(database_url: str, kind: str, at: int, other: int) -> None:
    """Edit log_entries behind the server's back (what a rogue operator with SQL could do)."""
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            row = session.get(LogEntry, at)
            assert row is not None
            if kind == "byte":
                flipped = bytearray(row.entry)
                flipped[len(flipped) // 2] ^= 0x01
                row.entry = bytes(flipped)
            elif kind == "delete":
                session.delete(row)
                session.flush()
                _move(session, at + 1, -1)
            elif kind == "swap":
                second = session.get(LogEntry, other)
                assert second is not None
                row.entry, second.entry = second.entry, row.entry
                row.leaf_hash, second.leaf_hash = second.leaf_hash, row.leaf_hash
            elif kind == "insert":
                _move(session, at, 1)
                data = encode_entry(utcnow(), "system", "request:approve", "request:9999", {})
                session.add(
                    LogEntry(
                        index=at,
                        created_at=utcnow(),
                        actor="system",
                        action="request:approve",
                        subject="request:9999",
                        entry=data,
                        leaf_hash=leaf_hash(data),
                    )
                )
            else:
                raise ValueError(kind)
            session.commit()
    finally:
        engine.dispose()


def fork(database_url: str, signer: LogSigner, at: int, extra: int) -> None:
    """Rewrite history from entry `at`, rebuild the whole tree, and re-sign with the log's
    own key: a consistent-looking log that is not an extension of what was published."""
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            session.execute(delete(LogEntry).where(LogEntry.index >= at))
            session.execute(delete(LogTreeNode))
            session.execute(delete(LogCosignature))
            session.execute(delete(LogCheckpoint))
            session.execute(update(LogHead).values(size=at))
            leaves = [
                bytes(h)
                for h in session.scalars(select(LogEntry.leaf_hash).order_by(LogEntry.index))
            ]
            tree.store_all_levels(session, leaves)
            fill(session, extra, tag="rewritten")
            checkpoints.publish_checkpoint(session, signer)
            session.commit()
    finally:
        engine.dispose()
