"""Two server processes on one database append concurrently while both publish checkpoints:
one consistent tree, and every published checkpoint consistent with every earlier one."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import select

from app.accounts import service as accounts
from app.accounts.passwords import make_hasher
from app.audit import service as audit
from app.audit.models import LogEntry
from app.db import make_engine, make_sessionmaker, utcnow
from app.log.models import LogCheckpoint, LogTreeNode
from app.permissions import Role
from porchlight.tlog.checkpoint import open_checkpoint
from porchlight.tlog.merkle import (
    complete_levels,
    consistency_proof,
    levels_reader,
    root,
    verify_consistency,
)
from porchlight.tlog.note import parse_verifier_key
from tests.server.live import live_server
from tests.server.log.helpers import auditor_token, porchlight, signer_for

WORKERS = 8
PER_WORKER = 40


def _tokens(database_url: str, count: int) -> list[str]:
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            secrets = []
            for number in range(count):
                user = accounts.create_user(
                    session,
                    make_hasher(1, 1024),
                    username=f"neighbour{number}",
                    password="lantern-quiet-harbour-9",
                    role=Role.resident,
                    agency_id=None,
                    actor="system",
                    now=utcnow(),
                )
                secrets.append(accounts.create_api_token(session, user, "cli", utcnow())[1])
            session.commit()
            return secrets
    finally:
        engine.dispose()


def test_two_processes_one_tree_all_checkpoints_consistent(
    database_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"  # shared: both processes sign with the one log key
    vkey = signer_for(data_dir, database_url).verifier_key
    verifier = parse_verifier_key(vkey)
    tokens = _tokens(database_url, WORKERS)
    auditor = auditor_token(database_url)
    seen: set[str] = set()
    stop = threading.Event()
    fast = {"log_checkpoint_interval_seconds": "0.05"}
    with (
        live_server(database_url, data_dir, **fast) as first,
        live_server(database_url, data_dir, **fast) as second,
    ):
        servers = [first, second]

        def watch() -> None:
            with httpx.Client(timeout=30) as client:
                while not stop.is_set():
                    for url in servers:
                        seen.add(client.get(f"{url}/log/checkpoint").text)

        def work(worker: int) -> int:
            made = 0
            with httpx.Client(timeout=60) as client:
                for number in range(PER_WORKER):
                    url = servers[(worker + number) % 2]
                    response = client.post(
                        f"{url}/api/tokens",
                        json={"name": f"t{worker}-{number}"},
                        headers={"Authorization": f"Bearer {tokens[worker]}"},
                    )
                    assert response.status_code == 201, response.text
                    made += 1
            return made

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with ThreadPoolExecutor(WORKERS) as pool:
                made = sum(pool.map(work, range(WORKERS)))
        finally:
            stop.set()
            watcher.join()
        assert made == WORKERS * PER_WORKER
        verified = porchlight(
            "audit",
            "verify",
            "--server",
            second,
            "--key",
            vkey,
            "--state",
            str(tmp_path / "state.json"),
            "--token",
            auditor,
        )
        assert verified.returncode == 0, verified.stderr

    # Both servers integrated at shutdown; nothing may be left pending.
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            assert audit.pending(session) == 0
            rows = session.execute(
                select(LogEntry.index, LogEntry.leaf_hash, LogEntry.action).order_by(LogEntry.index)
            ).all()
            nodes = {
                (level, index): bytes(value)
                for level, index, value in session.execute(
                    select(LogTreeNode.level, LogTreeNode.index, LogTreeNode.hash)
                )
            }
            published = session.scalars(select(LogCheckpoint).order_by(LogCheckpoint.id)).all()
    finally:
        engine.dispose()

    # No gaps, every request logged once, and the node table is exactly the entries' tree.
    assert [index for index, _, _ in rows] == list(range(len(rows)))
    # Each worker's own token and the PER_WORKER it made, plus the auditor's token.
    made_tokens = sum(action == "token:create" for _, _, action in rows)
    assert made_tokens == WORKERS * (PER_WORKER + 1) + 1
    leaves = [bytes(h) for _, h, _ in rows]
    levels = complete_levels(leaves)
    assert nodes == {
        (level, i): h for level, hashes in enumerate(levels) for i, h in enumerate(hashes)
    }

    # Checkpoints: published in increasing size, each signed and each the root of the prefix
    # of this one tree (so every one is consistent with every earlier one).
    assert len(published) >= 3
    sizes = [c.size for c in published]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
    for row in published:
        signed = open_checkpoint(row.note, verifier)
        assert signed.checkpoint.size == row.size
        assert signed.checkpoint.root_hash == root(leaves[: row.size])
    # Pairwise, with RFC 9162 consistency proofs: every one consistent with every earlier one.
    reader = levels_reader(levels)
    nonempty = [c for c in published if c.size > 0]
    for position, newer in enumerate(nonempty):
        for older in nonempty[:position]:
            proof = consistency_proof(older.size, newer.size, reader)
            verify_consistency(older.size, newer.size, older.root_hash, newer.root_hash, proof)
    # Everything the watchers saw was one of the stored checkpoints.
    notes = {c.note for c in published}
    assert {text.split("\n\n")[0] for text in seen} <= {n.split("\n\n")[0] for n in notes}
