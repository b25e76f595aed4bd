"""The verifiable log in-process (real app, SQLite and PostgreSQL): stored tree, tiles, proofs,
checkpoint publication, the log key, entries API and the transparency report."""

from __future__ import annotations

import base64
import json
import os
import stat
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.audit import integrator
from app.audit import service as audit
from app.audit.models import LogEntry
from app.log import checkpoints, tree
from app.log.keys import LogSigner, key_path
from app.log.models import LogCheckpoint, LogTreeNode
from app.permissions import Role
from porchlight.tlog.checkpoint import open_checkpoint
from porchlight.tlog.merkle import (
    complete_levels,
    leaf_hash,
    root,
    verify_consistency,
    verify_inclusion,
)
from porchlight.tlog.note import generate_signer, parse_verifier_key
from porchlight.tlog.tiles import build_tiles
from tests.server.factories import Community
from tests.server.log.helpers import fill

SIZE = 600  # two full tiles and a partial one at level 0; one partial level-1 tile


def _entries(community: Community) -> list[bytes]:
    with community.session() as session:
        return [bytes(e) for e in session.scalars(select(LogEntry.entry).order_by(LogEntry.index))]


def _vkey(client: TestClient) -> str:
    response = client.get("/api/log/public")
    assert response.status_code == 200, response.text
    return str(response.json()["verifier_key"])


def test_stored_nodes_are_the_tree_of_the_entries(community: Community) -> None:
    with community.session() as session:
        fill(session, 300)
    with community.session() as session:
        fill(session, SIZE - 300)  # a second transaction continues the same tree
    entries = _entries(community)
    assert len(entries) == SIZE
    levels = complete_levels([leaf_hash(e) for e in entries])
    with community.session() as session:
        stored = {
            (level, index): bytes(value)
            for level, index, value in session.execute(
                select(LogTreeNode.level, LogTreeNode.index, LogTreeNode.hash)
            )
        }
        assert stored == {
            (level, index): value
            for level, hashes in enumerate(levels)
            for index, value in enumerate(hashes)
        }
        for size in (1, 2, 3, 255, 256, 257, 511, SIZE):
            assert tree.root_hash(session, size) == root([leaf_hash(e) for e in entries[:size]])


def test_tiles_and_bundles_are_the_tlog_tiles_of_the_log(community: Community) -> None:
    client = community.client
    # Creating the auditor logs two entries (user:create, token:create): the log is SIZE long.
    auditor = community.auth(community.person(Role.auditor))
    with community.session() as session:
        fill(session, SIZE - 2)
    expected = build_tiles(_entries(community))
    assert {"tile/0/000", "tile/0/001", "tile/0/002.p/88", "tile/1/000.p/2"} <= set(expected)
    assert any(path.startswith("tile/entries/") for path in expected)
    for path, data in expected.items():
        bundle = path.startswith("tile/entries/")
        # Hash tiles need no login; entry bundles only an auditor's.
        response = client.get(f"/log/{path}", headers=auditor if bundle else {})
        assert response.status_code == 200, path
        assert response.content == data, path
        # Full or partial, a tile never changes (tlog-tiles: "caching headers SHOULD be
        # long-lived"); only the checkpoint does.
        cache = response.headers["cache-control"]
        visibility = "private" if bundle else "public"
        assert cache == f"{visibility}, max-age=31536000, immutable", (path, cache)
    # A narrower partial tile (a client holding an older checkpoint) is served too.
    assert client.get("/log/tile/0/002.p/10").content == expected["tile/0/002.p/88"][: 10 * 32]
    for missing in (
        "tile/0/003",
        "tile/0/002",
        "tile/0/002.p/89",
        "tile/entries/003",
        "tile/entries/002",
        "tile/2/000",
    ):
        assert client.get(f"/log/{missing}", headers=auditor).status_code == 404, missing
    for bad in (
        "tile/0/2",
        "tile/0/002.p/0",
        "tile/0/002.p/256",
        "tile/x/000",
        "tile/0/-01",
        "tile/entries/2",
        "tile/entries/000.p/0",
    ):
        assert client.get(f"/log/{bad}", headers=auditor).status_code == 404, bad


def test_entry_bundles_are_for_auditors_only(community: Community) -> None:
    """Bundles hold every entry's bytes (who was asked, who declined): DESIGN promise 3."""
    client = community.client
    others = {
        role: community.auth(community.person(role))
        for role in (Role.requester, Role.resident, Role.reviewer, Role.admin)
    }
    auditor = community.auth(community.person(Role.auditor))
    with community.session() as session:
        fill(session, SIZE)
    bundles = [p for p in build_tiles(_entries(community)) if p.startswith("tile/entries/")]
    assert len(bundles) == 3  # two full bundles and a partial one
    for path in bundles:
        assert client.get(f"/log/{path}").status_code == 401, path
        for role, headers in others.items():
            response = client.get(f"/log/{path}", headers=headers)
            assert response.status_code == 403, (role, path)
            assert b"request:" not in response.content
        response = client.get(f"/log/{path}", headers=auditor)
        assert response.status_code == 200 and b"request:" in response.content, path
    # The public parts of the log stay public.
    for public in ("/log/checkpoint", "/log/tile/0/000", "/log/tile/1/000.p/2", "/api/log/public"):
        assert client.get(public).status_code == 200, public


def test_proofs_verify_with_porchlight_tlog(community: Community) -> None:
    client = community.client
    with community.session() as session:
        fill(session, SIZE)
        checkpoints.publish_checkpoint(session)
    hashes = [leaf_hash(e) for e in _entries(community)]
    for index, size in [(0, 1), (0, SIZE), (299, 300), (511, 512), (599, SIZE), (123, 457)]:
        response = client.get("/log/proof/inclusion", params={"index": index, "size": size})
        assert response.status_code == 200, response.text
        body = response.json()
        proof = [base64.b64decode(p) for p in body["proof"]]
        assert base64.b64decode(body["leaf_hash"]) == hashes[index]
        assert base64.b64decode(body["root_hash"]) == root(hashes[:size])
        verify_inclusion(index, size, hashes[index], proof, root(hashes[:size]))
    # Default size: the latest checkpoint, whose signed root the proof leads to.
    text = client.get("/log/checkpoint").text
    signed = open_checkpoint(text, parse_verifier_key(_vkey(client)))
    body = client.get("/log/proof/inclusion", params={"index": 42}).json()
    assert body["size"] == signed.checkpoint.size == SIZE
    verify_inclusion(
        42,
        SIZE,
        hashes[42],
        [base64.b64decode(p) for p in body["proof"]],
        signed.checkpoint.root_hash,
    )
    for first, second in [(1, 2), (7, 300), (256, 512), (300, SIZE), (SIZE, SIZE)]:
        response = client.get("/log/proof/consistency", params={"from": first, "to": second})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["from"], body["to"]) == (first, second)
        verify_consistency(
            first,
            second,
            root(hashes[:first]),
            root(hashes[:second]),
            [base64.b64decode(p) for p in body["proof"]],
        )
    for params in ({"index": SIZE}, {"index": 5, "size": SIZE + 1}, {"index": -1}):
        assert client.get("/log/proof/inclusion", params=params).status_code in (404, 422)
    assert client.get("/log/proof/consistency", params={"from": 10, "to": 5}).status_code == 422
    assert client.get("/log/proof/consistency", params={"from": 0}).status_code == 422


def test_checkpoints_on_lifecycle_commit_and_only_when_grown(community: Community) -> None:
    client = community.client
    vkey = parse_verifier_key(_vkey(client))
    entries = community.counts()["log_entries"]
    with community.session() as session:
        first = checkpoints.latest(session)
        assert first is not None and first.size == entries
        audit.append(session, "system", "invite:create", "invite:1")
    with community.session() as session:
        # Not a request-lifecycle action: waits for the periodic publisher.
        assert checkpoints.latest(session).size == first.size  # type: ignore[union-attr]
        audit.append(session, "user:1", "request:submit", "request:1")
        audit.append(session, "user:2", "ask:create", "ask:1", {"request": "request:1"})
    with community.session() as session:
        latest = checkpoints.latest(session)
        assert latest is not None and latest.size == first.size + 3
        assert session.scalar(select(func.count()).select_from(LogCheckpoint)) == 2
        # Idempotent when nothing was appended.
        assert checkpoints.publish_checkpoint(session).id == latest.id
    signed = open_checkpoint(client.get("/log/checkpoint").text, vkey)
    assert signed.checkpoint.size == first.size + 3
    assert client.get("/log/checkpoint").headers["cache-control"] == "no-cache"
    # A rolled-back lifecycle change publishes nothing and leaves no entry.
    before = community.counts()
    with community.app.state.sessionmaker() as session:
        audit.append(session, "user:1", "request:approve", "request:1")
        session.rollback()
    assert community.counts() == before


def test_reads_of_warrant_details_wait_for_the_periodic_checkpoint(community: Community) -> None:
    with community.session() as session:
        first = checkpoints.latest(session)
        assert first is not None
        for action in ("request:read", "ask:deliver", "ask:list"):
            audit.append(session, "user:1", action, "request:1")
    with community.session() as session:
        # Logged, but no state changed: no checkpoint of its own.
        assert checkpoints.latest(session).size == first.size  # type: ignore[union-attr]
        audit.append(session, "user:2", "request:approve", "request:1")
    with community.session() as session:
        # The next transition's checkpoint covers the reads before it too.
        assert checkpoints.latest(session).size == first.size + 4  # type: ignore[union-attr]


def test_the_log_key_is_private_and_only_its_verifier_is_shown(community: Community) -> None:
    settings = community.app.state.settings
    path = key_path(settings)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    secret = path.read_text().strip()
    assert secret.startswith("PRIVATE+KEY+")
    public = community.client.get("/api/log/public").json()
    vkey = public["verifier_key"]
    assert vkey == community.app.state.log_signer.verifier_key
    assert parse_verifier_key(vkey).name == public["origin"]
    seed_b64 = secret.split("+", 4)[4]  # base64 may itself contain "+"
    assert seed_b64 not in repr(community.app.state.log_signer)
    assert seed_b64 not in community.client.get("/api/log/public").text


def test_entries_api_pages_and_filters_by_subject(community: Community) -> None:
    client = community.client
    auditor = community.person(Role.auditor)
    resident = community.person(Role.resident)
    with community.session() as session:
        fill(session, 250)
    assert client.get("/api/log/entries", headers=community.auth(resident)).status_code == 403
    assert client.get("/api/log/entries").status_code == 401
    page = client.get(
        "/api/log/entries", params={"start": 5, "limit": 10}, headers=community.auth(auditor)
    ).json()
    assert [e["index"] for e in page["entries"]] == list(range(5, 15))
    first = page["entries"][0]
    assert {"index", "time", "actor", "action", "subject", "details", "entry"} <= set(first)
    assert base64.b64decode(first["entry"]).decode().startswith('{"action":')
    about = client.get(
        "/api/log/entries", params={"subject": "request:3"}, headers=community.auth(auditor)
    ).json()["entries"]
    assert len(about) == 10 and {e["subject"] for e in about} == {"request:3"}
    assert [e["details"]["n"] for e in about] == list(range(30, 40))


def test_transparency_report_counts_lifecycle_actions_per_quarter(community: Community) -> None:
    q3 = datetime(2026, 8, 1, tzinfo=UTC)
    q4 = datetime(2026, 10, 1, tzinfo=UTC)  # the first instant of Q4 counts in Q4
    plan = [
        (q3, "request:submit", 3),
        (q3, "request:reject", 1),
        (q4, "request:submit", 5),
        (q4, "request:approve", 5),  # enough for ask and clip counts to be published
        (q4, "ask:create", 5),
        (q4, "ask:consent", 3),
        (q4, "ask:decline", 1),
        (q4, "ask:expire", 1),
        (q4, "clip:share", 3),
        (q4, "clip:download", 4),
        (q4, "clip:purge", 2),
        (q4, "clip:delete", 1),
        (q4, "invite:create", 7),  # not in the report
    ]
    with community.session() as session:
        for moment, action, count in plan:
            for number in range(count):
                audit.append(session, "system", action, f"request:{number}", now=moment)
        # Asks sent in bulk when a request opens: details.asks of request:open counts too.
        audit.append(session, "system", "request:open", "request:1", {"asks": 4}, now=q4)
        audit.append(session, "system", "request:open", "request:2", {"asks": 2}, now=q4)
    now = datetime(2027, 1, 15, tzinfo=UTC)
    community.app.state.clock = lambda: now
    response = community.client.get("/api/transparency")
    assert response.status_code == 200
    body = response.json()
    assert body["actions"]["consents"] == "ask:consent"
    assert "current quarter is published when it ends" in body["note"]
    assert body["actions"]["purges"] == "clip:purge + clip:delete"
    quarters = {q["quarter"]: q["counts"] for q in body["quarters"]}
    # 2027-Q1 is under way: it is published when it ends (test_transparency_report.py).
    assert list(quarters) == ["2026-Q3", "2026-Q4"]
    # No request approved in Q3: its ask and clip counts are withheld (test_transparency_report.py).
    assert quarters["2026-Q3"] == {
        **dict.fromkeys(quarters["2026-Q3"], None),
        "requests_received": 3,
        "rejected_at_review": 1,
        "approved": 0,
    }
    assert quarters["2026-Q4"] == {
        "requests_received": 5,
        "rejected_at_review": 0,
        "approved": 5,
        "residents_asked": 5 + 4 + 2,
        "consents": 3,
        "declines": 1,
        "asks_expired": 1,
        "clips_shared": 3,
        "downloads": 4,
        "purges": 3,
    }


def test_append_many_is_the_same_log_as_appending_one_by_one(community: Community) -> None:
    moment = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
    records: list[tuple[str, str, str, dict[str, object] | None]] = [
        (f"user:{n % 3 + 1}", "request:close", f"request:{n}", {"n": n}) for n in range(300)
    ]
    with community.session() as session:
        base = integrator.integrate_all(session)
        assert audit.append_many(session, records, now=moment) == 300  # type: ignore[arg-type]
        assert audit.append_many(session, [], now=moment) == 0
        assert audit.pending(session) == 300
    with community.session() as session:
        # request:* is a lifecycle action: the batch's commit integrated it and published a
        # checkpoint covering it.
        assert audit.pending(session) == 0
        latest = checkpoints.latest(session)
        assert latest is not None and latest.size == base + 300
        many = [bytes(e) for e in session.scalars(select(LogEntry.entry).order_by(LogEntry.index))]
    with community.session() as session:
        for actor, action, subject, details in records:
            audit.append(session, actor, action, subject, details, now=moment)  # type: ignore[arg-type]
        integrator.integrate_all(session)
        one_by_one = [
            bytes(e)
            for e in session.scalars(
                select(LogEntry.entry).where(LogEntry.index >= base + 300).order_by(LogEntry.index)
            )
        ]
        # Each entry has its own random salt; apart from it the two logs are the same.
        unsalted = [json.loads(e) for e in one_by_one]
        salts = {doc.pop("salt") for doc in unsalted}
        expected = [json.loads(e) for e in many[base:]]
        salts |= {doc.pop("salt") for doc in expected}
        assert unsalted == expected
        assert len(salts) == 600
        hashes = [leaf_hash(e) for e in many + one_by_one]
        assert tree.root_hash(session, len(hashes)) == root(hashes)


def test_a_different_log_key_never_signs_this_log(community: Community) -> None:
    # A second key for the same origin (load_or_create itself refuses to make one for a log
    # that has published checkpoints: tests/server/test_log_key_guard.py).
    other = LogSigner(generate_signer(community.app.state.log_signer.origin))
    assert other.verifier_key != community.app.state.log_signer.verifier_key
    with community.session() as session:
        audit.append(session, "system", "invite:create", "invite:1")
    before = community.counts()
    with community.app.state.sessionmaker() as session:
        with pytest.raises(checkpoints.InconsistentTree, match="log key"):
            checkpoints.publish_checkpoint(session, other)
        session.rollback()
    assert community.counts() == before


def test_tiles_and_bundles_are_read_afresh_and_without_the_write_lock(
    community: Community,
) -> None:
    """Nothing is cached: an edit of the tables is what the next read serves. And a hash tile
    is read outside any transaction, so a writer holding the database (on SQLite, its write
    lock) does not stop it."""
    client = community.client
    auditor = community.auth(community.person(Role.auditor))
    with community.session() as session:
        fill(session, SIZE - 2)
    before = client.get("/log/tile/entries/001", headers=auditor).content
    tile_before = client.get("/log/tile/0/001").content
    with community.session() as session:
        row = session.get(LogEntry, 300)
        assert row is not None
        row.entry = row.entry.replace(b"{", b"{ ", 1)
        node = session.get(LogTreeNode, (0, 300))
        assert node is not None
        node.hash = bytes(32)
    after = client.get("/log/tile/entries/001", headers=auditor).content
    assert after != before and len(after) == len(before) + 1
    tile_after = client.get("/log/tile/0/001").content
    assert tile_after[44 * 32 : 45 * 32] == bytes(32)
    assert tile_after[: 44 * 32] == tile_before[: 44 * 32]
    with community.session() as writer:
        writer.execute(select(LogEntry.index).limit(1)).all()  # begins (SQLite: IMMEDIATE)
        writer.add(LogTreeNode(level=30, index=0, hash=bytes(32)))
        writer.flush()
        assert client.get("/log/tile/0/000").status_code == 200
        assert client.get("/log/tile/1/000.p/2").status_code == 200
        writer.rollback()
