"""Sequencing and integration: an append commits with its change and takes no lock; the
integrator gives committed entries consecutive indexes and tree nodes, never skipping one and
never indexing one twice; a rolled-back change leaves nothing; a crash between commit and
integration loses nothing."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, insert, select, text
from sqlalchemy.exc import IntegrityError

from app.audit import integrator
from app.audit import service as audit
from app.audit.entry import encode_entry, leaf_hash
from app.audit.models import LogEntry, LogHead, PendingEntry
from app.db import make_engine, make_sessionmaker, utcnow
from app.log import checkpoints, tree
from app.log.models import LogCheckpoint, LogTreeNode
from app.migrate import downgrade, upgrade
from app.settings import Settings
from porchlight.tlog.checkpoint import open_checkpoint
from porchlight.tlog.merkle import (
    complete_levels,
    consistency_proof,
    levels_reader,
    root,
    verify_consistency,
)
from porchlight.tlog.note import parse_verifier_key
from tests.server.databases import empty_database
from tests.server.factories import Community
from tests.server.live import _start
from tests.server.log.helpers import auditor_token, integrate_log, signer_for

WRITERS = 12
PER_WRITER = 40


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The test app's own integrator and publisher never run (they would race the tests,
    which integrate by hand and look at what is pending in between); at start-up the app
    still integrates and publishes once."""
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        log_integrate_interval_seconds=86400,
        log_checkpoint_interval_seconds=86400,
    )


def _log(
    database_url: str,
) -> tuple[list[tuple[int, int | None, str, bytes]], dict[tuple[int, int], bytes], int, int]:
    """(index, seq, subject, leaf hash) of every entry, the node table, the head size and how
    many entries are pending."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = [
                (index, seq, subject, bytes(value))
                for index, seq, subject, value in connection.execute(
                    select(
                        LogEntry.index, LogEntry.seq, LogEntry.subject, LogEntry.leaf_hash
                    ).order_by(LogEntry.index)
                )
            ]
            nodes = {
                (level, index): bytes(value)
                for level, index, value in connection.execute(
                    select(LogTreeNode.level, LogTreeNode.index, LogTreeNode.hash)
                )
            }
            size = connection.scalar(select(LogHead.size))
            pending = connection.scalar(select(func.count()).select_from(PendingEntry))
    finally:
        engine.dispose()
    assert size is not None and pending is not None
    return rows, nodes, size, pending


def _assert_one_gapless_tree(database_url: str) -> list[tuple[int, int | None, str, bytes]]:
    rows, nodes, size, pending = _log(database_url)
    assert pending == 0
    assert [index for index, _, _, _ in rows] == list(range(size))
    levels = complete_levels([value for _, _, _, value in rows])
    assert nodes == {
        (level, index): value
        for level, hashes in enumerate(levels)
        for index, value in enumerate(hashes)
    }
    return rows


def test_rollback_leaves_nothing_and_integration_is_idempotent(community: Community) -> None:
    before = community.counts()
    with community.app.state.sessionmaker() as session:
        audit.append(session, "system", "invite:create", "invite:1")
        audit.append_many(session, [("system", "invite:create", "invite:2", None)])
        assert audit.pending(session) == 2  # its own, visible to itself
        session.rollback()
    assert community.counts() == before
    with community.session() as session:
        size = audit.size(session)
        for number in range(5):
            audit.append(session, "system", "invite:create", f"invite:{number}")
    with community.session() as session:
        # Committed, durable, not yet in the tree: no index, no node, same size.
        assert (audit.pending(session), audit.size(session)) == (5, size)
        assert integrator.integrate(session) == range(size, size + 5)
    with community.session() as session:
        root_before = tree.root_hash(session, size + 5)
        assert integrator.integrate(session) == range(size + 5, size + 5)
        assert integrator.integrate_all(session) == size + 5
    after = community.counts()
    assert after["log_entries"] == before["log_entries"] + 5
    assert after["log_pending"] == 0
    assert integrate_log(community.app) == size + 5
    assert community.counts() == after
    with community.session() as session:
        assert tree.root_hash(session, size + 5) == root_before
    _assert_one_gapless_tree(community.app.state.settings.database_url)


def test_integration_takes_batches_in_insertion_order(community: Community) -> None:
    with community.session() as session:
        size = integrator.integrate_all(session)
        audit.append_many(
            session, [("system", "invite:create", f"invite:{n}", {"n": n}) for n in range(7)]
        )
    with community.session() as session:
        assert integrator.integrate(session, limit=3) == range(size, size + 3)
        assert integrator.integrate(session, limit=3) == range(size + 3, size + 6)
        assert audit.pending(session) == 1
        assert integrator.integrate(session, limit=3) == range(size + 6, size + 7)
    rows = _assert_one_gapless_tree(community.app.state.settings.database_url)
    subjects = [subject for _, _, subject, _ in rows[size:]]
    assert subjects == [f"invite:{n}" for n in range(7)]


def test_concurrent_appends_and_integrators_make_one_tree(
    database_url: str, tmp_path: Path
) -> None:
    """Many writers (one entry per transaction, some rolled back) while integrators race each
    other and checkpoints are published: every committed entry exactly once, no gaps, the node
    table exactly the entries' tree, every checkpoint consistent with every earlier one."""
    signer = signer_for(tmp_path / "data", database_url)
    engine = make_engine(database_url)
    factory = make_sessionmaker(engine)
    done = threading.Event()
    errors: list[BaseException] = []
    committed: list[str] = []
    lock = threading.Lock()

    def writer(number: int) -> None:
        rng = random.Random(number)
        try:
            for n in range(PER_WRITER):
                subject = f"invite:{number}-{n}"
                with factory() as session:
                    audit.append(session, f"user:{number + 1}", "invite:create", subject)
                    if rng.random() < 0.2:
                        session.rollback()
                        continue
                    session.commit()
                with lock:
                    committed.append(subject)
        except BaseException as error:
            errors.append(error)

    def background_integrator() -> None:
        try:
            while not done.wait(0.002):
                integrator.integrate_pending(factory)
        except BaseException as error:
            errors.append(error)

    def publisher() -> None:
        try:
            while not done.wait(0.01):
                with factory() as session:
                    checkpoints.publish_checkpoint(session, signer)
                    session.commit()
        except BaseException as error:
            errors.append(error)

    helpers = [threading.Thread(target=background_integrator) for _ in range(2)]
    helpers.append(threading.Thread(target=publisher))
    writers = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    try:
        for thread in [*helpers, *writers]:
            thread.start()
        for thread in writers:
            thread.join()
    finally:
        done.set()
        for thread in helpers:
            thread.join()
    assert errors == []
    with factory() as session:
        checkpoints.publish_checkpoint(session, signer)
        session.commit()
        published = session.scalars(select(LogCheckpoint).order_by(LogCheckpoint.id)).all()
    engine.dispose()

    rows = _assert_one_gapless_tree(database_url)
    subjects = [subject for _, _, subject, _ in rows]
    assert sorted(subjects) == sorted(committed)  # every committed entry, exactly once
    seqs = [seq for _, seq, _, _ in rows]
    assert None not in seqs and len(set(seqs)) == len(seqs)
    leaves = [value for _, _, _, value in rows]
    verifier = parse_verifier_key(signer.verifier_key)
    sizes = [c.size for c in published]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes) and sizes[-1] == len(rows)
    reader = levels_reader(complete_levels(leaves))
    for position, newer in enumerate(published):
        assert open_checkpoint(newer.note, verifier).checkpoint.root_hash == root(
            leaves[: newer.size]
        )
        for older in published[:position]:
            if older.size > 0:
                proof = consistency_proof(older.size, newer.size, reader)
                verify_consistency(older.size, newer.size, older.root_hash, newer.root_hash, proof)


def test_a_crash_between_commit_and_integration_loses_nothing(
    database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    token = auditor_token(database_url, "crash-test-auditor")
    never = {
        "log_integrate_interval_seconds": "3600",
        "log_checkpoint_interval_seconds": "3600",
        "log_checkpoint_size_multiple": "1",  # counts entries exactly
    }
    process, url = _start(database_url, data_dir, never)
    try:
        _, _, size, _ = _log(database_url)  # the server integrated what it found at start
        with httpx.Client(base_url=url, timeout=30) as client:
            for number in range(5):
                response = client.post(
                    "/api/tokens",
                    json={"name": f"t{number}"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert response.status_code == 201, response.text
        rows, _, size_now, pending = _log(database_url)
        assert (size_now, pending) == (size, 5)  # committed, waiting for the integrator
    finally:
        process.kill()  # SIGKILL: no shutdown, no final integration
        process.wait()
    assert _log(database_url)[3] == 5
    # The next start integrates them before serving, and its first checkpoint covers them.
    process, url = _start(database_url, data_dir, never)
    try:
        rows = _assert_one_gapless_tree(database_url)
        assert len(rows) == size + 5
        assert sum(subject.startswith("token:") for _, _, subject, _ in rows[size:]) == 5
        note = httpx.get(f"{url}/log/checkpoint", timeout=30).text
        assert note.split("\n")[1] == str(size + 5)
    finally:
        process.terminate()
        process.wait()


def test_downgrade_integrates_pending_entries_first(backend: str, tmp_path: Path) -> None:
    with empty_database(backend, tmp_path) as url:
        upgrade(url)
        engine = make_engine(url)
        factory = make_sessionmaker(engine)
        with factory() as session:
            for number in range(9):
                audit.append(session, "system", "invite:create", f"invite:{number}")
            integrator.integrate_all(session)
            session.commit()
        with factory() as session:
            for number in range(9, 14):
                audit.append(session, "system", "invite:create", f"invite:{number}")
            session.commit()
        engine.dispose()
        downgrade(url, "0003")
        old = create_engine(url)
        try:
            with old.connect() as connection:
                leaves = [
                    bytes(value)
                    for (value,) in connection.execute(
                        text('SELECT leaf_hash FROM log_entries ORDER BY "index"')
                    )
                ]
                subjects = list(
                    connection.scalars(text('SELECT subject FROM log_entries ORDER BY "index"'))
                )
                size = connection.scalar(text("SELECT size FROM log_head"))
                nodes = {
                    (level, index): bytes(value)
                    for level, index, value in connection.execute(
                        text('SELECT level, "index", hash FROM log_tree_nodes')
                    )
                }
        finally:
            old.dispose()
        assert subjects == [f"invite:{n}" for n in range(14)]
        assert size == 14
        assert nodes == {
            (level, index): value
            for level, hashes in enumerate(complete_levels(leaves))
            for index, value in enumerate(hashes)
        }
        upgrade(url)
        # And the schema works again at head: an old entry then a new one.
        engine = make_engine(url)
        with make_sessionmaker(engine)() as session:
            audit.append(session, "system", "invite:create", "invite:14")
            assert integrator.integrate_all(session) == 15
            session.commit()
        engine.dispose()


def test_the_database_refuses_to_index_one_pending_entry_twice(community: Community) -> None:
    data = encode_entry(utcnow(), "system", "invite:create", "invite:1", {})
    with community.session() as session:
        size = integrator.integrate_all(session)
        audit.append(session, "system", "invite:create", "invite:1")
    with community.session() as session:
        [seq] = session.scalars(select(PendingEntry.seq))
        integrator.integrate(session)
    row = {
        "index": size + 1,
        "seq": seq,
        "created_at": utcnow(),
        "actor": "system",
        "action": "invite:create",
        "subject": "invite:1",
        "entry": data,
        "leaf_hash": leaf_hash(data),
    }
    engine = create_engine(community.app.state.settings.database_url)
    try:
        with engine.connect() as connection, pytest.raises(IntegrityError):
            connection.execute(insert(LogEntry), [row])
    finally:
        engine.dispose()


@pytest.mark.postgresql_only
def test_an_idle_integration_round_keeps_the_sessions_prepared_statements(
    database_url: str,
) -> None:
    # Ending the idle round's transaction with ROLLBACK made psycopg deallocate every
    # statement it had prepared in that session, five times a second per server process.
    engine = make_engine(database_url)
    engine.pool.dispose()
    factory = make_sessionmaker(engine)
    probe = "SELECT count(*) FROM log_head WHERE id = :id"
    try:
        with engine.connect() as connection:
            for _ in range(8):  # psycopg prepares a statement on its sixth use in a session
                connection.execute(text(probe), {"id": 1})
            backend = connection.scalar(text("SELECT pg_backend_pid()"))
            connection.commit()

        assert integrator.integrate_pending(factory) == 0  # nothing pending: the idle round

        with engine.connect() as connection:
            assert connection.scalar(text("SELECT pg_backend_pid()")) == backend  # same session
            prepared = connection.scalars(
                text("SELECT statement FROM pg_prepared_statements")
            ).all()
        assert any("log_head" in statement and "count" in statement for statement in prepared)
    finally:
        engine.dispose()
