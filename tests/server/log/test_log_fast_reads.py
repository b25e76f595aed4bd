"""The log's busiest reads (hash tiles, entry bundles, inclusion proofs) answered before routing
by `app.log.routes.LogReads`, and read outside any session (`app.log.tree.RawReads`): the same
answers as the routes, errors left to the routes, and a revoked or disabled auditor refused at
the very next read (nothing about tokens is cached). SQLite and PostgreSQL."""

from __future__ import annotations

import base64
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select
from starlette.types import Receive, Scope, Send

from app.audit.models import LogEntry
from app.log import checkpoints, tree
from app.log.models import LogTreeNode
from app.log.routes import LogReads
from app.permissions import Role
from porchlight.tlog.merkle import leaf_hash, root, verify_inclusion
from porchlight.tlog.tiles import build_tiles
from tests.server.factories import Community
from tests.server.log.helpers import fill

SIZE = 600
FELL_THROUGH = 599


def _entries(community: Community) -> list[bytes]:
    with community.session() as session:
        return [bytes(e) for e in session.scalars(select(LogEntry.entry).order_by(LogEntry.index))]


def _fast_reads_only(community: Community) -> TestClient:
    """A client of `LogReads` alone over the real app's state: whatever it does not answer
    itself reaches a stand-in for the routes that answers 599."""

    async def routes(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": FELL_THROUGH, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    reads = LogReads(routes)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette sets scope["app"] before its middleware runs.
        await reads({**scope, "app": community.app}, receive, send)

    return TestClient(app)


def _filled(community: Community) -> tuple[dict[str, str], list[bytes]]:
    auditor = community.auth(community.person(Role.auditor))
    with community.session() as session:
        fill(session, SIZE - 2)
        checkpoints.publish_checkpoint(session)
    return auditor, _entries(community)


def test_fast_reads_answer_tiles_bundles_and_proofs_themselves(community: Community) -> None:
    auditor, entries = _filled(community)
    requester = community.auth(community.person(Role.requester))
    fast = _fast_reads_only(community)
    tiles = build_tiles(entries[:SIZE])
    for path, data in tiles.items():
        bundle = path.startswith("tile/entries/")
        response = fast.get(f"/log/{path}", headers=auditor if bundle else {})
        assert response.status_code == 200, path
        assert response.content == data, path
        assert response.headers["content-type"] == "application/octet-stream"
        # The same long-lived caching as the route's, partial tiles included.
        cache = response.headers["cache-control"]
        visibility = "private" if bundle else "public"
        assert cache == f"{visibility}, max-age=31536000, immutable", (path, cache)
    hashes = [leaf_hash(e) for e in entries]
    for index, size in [(0, 1), (5, None), (299, 300), (SIZE - 1, SIZE)]:
        query = f"index={index}" + (f"&size={size}" if size else "")
        response = fast.get(f"/log/proof/inclusion?{query}")
        assert response.status_code == 200, query
        body = response.json()
        tree_size = size or SIZE
        assert body["size"] == tree_size
        assert base64.b64decode(body["leaf_hash"]) == hashes[index]
        assert base64.b64decode(body["root_hash"]) == root(hashes[:tree_size])
        proof = [base64.b64decode(node) for node in body["proof"]]
        verify_inclusion(index, tree_size, hashes[index], proof, root(hashes[:tree_size]))
    # Everything else is the routes' to answer (and to refuse).
    for path, headers in [
        ("/log/tile/entries/000", {}),  # no token
        ("/log/tile/entries/000", requester),  # a role without log:read
        ("/log/tile/entries/000", {"Authorization": "Bearer plt_not-a-token"}),
        ("/log/tile/entries/000", {"Authorization": "Basic abc"}),
        ("/log/tile/entries/000", {"Cookie": "porchlight_session=whatever"}),
        ("/log/tile/0/009", {}),  # beyond the log
        ("/log/tile/0/009.p/89", {}),
        ("/log/tile/x/000", {}),  # malformed
        ("/log/tile/entries/2", auditor),
        ("/log/proof/inclusion", {}),
        ("/log/proof/inclusion?index=-1", {}),
        ("/log/proof/inclusion?index=abc", {}),
        ("/log/proof/inclusion?index=1&size=0", {}),
        (f"/log/proof/inclusion?index={SIZE}", {}),
        (f"/log/proof/inclusion?index=1&size={SIZE + 1000}", {}),
        ("/log/proof/inclusion?index=1&index=2", {}),
        ("/log/proof/inclusion?index=1&other=2", {}),
        ("/log/proof/consistency?from=1", {}),
        ("/log/checkpoint", {}),
    ]:
        assert fast.get(path, headers=headers).status_code == FELL_THROUGH, (path, headers)
    assert fast.head("/log/tile/0/000").status_code == FELL_THROUGH


def test_fast_answers_are_the_routes_answers(community: Community) -> None:
    """Through the whole app: what the fast path answers equals what the routes answer for
    the same read (a cookie-signed-in auditor's bundle and a proof asked with an extra query
    parameter both go to the routes), security headers included; errors are as before."""
    auditor, _ = _filled(community)
    client = community.client
    person = community.person(Role.auditor)
    browser = TestClient(community.app)
    community.login(person, browser)
    for path in ("/log/tile/entries/000", "/log/tile/entries/002.p/88"):
        fast = client.get(path, headers=auditor)
        routed = browser.get(path)
        assert fast.status_code == routed.status_code == 200
        assert fast.content == routed.content
        assert _headers(fast) == _headers(routed)
    for query in ("index=7", "index=0&size=1", "index=512&size=599"):
        fast = client.get(f"/log/proof/inclusion?{query}")
        routed = client.get(f"/log/proof/inclusion?{query}&via=route")
        assert fast.status_code == routed.status_code == 200
        assert fast.json() == routed.json()
        assert _headers(fast) == _headers(routed)
    assert "content-security-policy" in client.get("/log/tile/0/000").headers
    refused = client.get("/log/tile/entries/000")
    assert refused.status_code == 401
    assert refused.json() == {"error": "not_authenticated", "message": "not signed in"}
    requester = community.auth(community.person(Role.requester))
    assert client.get("/log/tile/entries/000", headers=requester).status_code == 403
    bad = client.get("/log/tile/entries/000", headers={"Authorization": "Basic abc"})
    assert bad.status_code == 401 and "Bearer" in bad.json()["message"]
    assert client.get("/log/tile/0/009").status_code == 404
    assert client.get("/log/proof/inclusion?index=-1").status_code == 422
    assert client.get(f"/log/proof/inclusion?index={SIZE}").status_code == 422
    too_big = client.get(f"/log/proof/inclusion?index=1&size={SIZE + 1000}")
    assert too_big.status_code == 422 and "latest published checkpoint" in too_big.json()["message"]


def _headers(response: Any) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k not in ("date", "server")}


def test_a_revoked_token_or_disabled_auditor_reads_no_bundle_at_the_next_request(
    community: Community,
) -> None:
    client = community.client
    auditor = community.person(Role.auditor)
    other = community.person(Role.auditor)
    with community.session() as session:
        fill(session, 300)
    bundle = "/log/tile/entries/000"
    headers = community.auth(auditor)
    assert client.get(bundle, headers=headers).status_code == 200
    tokens = client.get("/api/tokens", headers=headers).json()
    assert client.delete(f"/api/tokens/{tokens[0]['id']}", headers=headers).status_code == 200
    refused = client.get(bundle, headers=headers)
    assert refused.status_code == 401
    assert refused.json()["message"] == "API token not recognised or revoked"
    assert client.get("/api/me", headers=headers).status_code == 401

    admin = community.auth(community.person(Role.admin))
    assert client.get(bundle, headers=community.auth(other)).status_code == 200
    response = client.post(f"/api/people/{other.id}/disable", headers=admin)
    assert response.status_code == 200, response.text
    assert client.get(bundle, headers=community.auth(other)).status_code == 401
    assert client.get("/api/me", headers=community.auth(other)).status_code == 401


def test_proofs_read_outside_a_session_are_the_session_proofs(community: Community) -> None:
    with community.session() as session:
        fill(session, SIZE)
    engine = community.app.state.engine
    cases = [(0, 1), (0, 2), (1, 3), (255, 256), (256, 513), (299, SIZE), (SIZE - 1, SIZE)]
    with community.session() as session, tree.RawReads(engine) as reads:
        assert tree.published_and_committed(reads)[1] == SIZE
        for index, size in cases:
            expected = tree.inclusion_with_root(session, index, size)
            assert tree.inclusion_with_root(reads, index, size) == expected, (index, size)
            assert tree.inclusion(session, index, size) == expected[2]
    # A node the proof needs is gone: both readers say so rather than prove something else.
    with community.session() as session:
        session.execute(delete(LogTreeNode).where(LogTreeNode.level == 0, LogTreeNode.index == 7))
    with community.session() as session, tree.RawReads(engine) as reads:
        for source in (session, reads):
            with pytest.raises(tree.MissingNodes, match=r"\(0, 7\)"):
                tree.inclusion_with_root(source, 6, SIZE)
    # The connection went back to the pool as it came (not left in autocommit mode).
    with engine.connect() as connection:
        assert connection.execute(select(LogEntry.index).limit(1)).all()
        connection.rollback()


@pytest.mark.postgresql_only  # SQLite connections are always in autocommit mode
def test_a_connection_lost_during_a_read_is_not_handed_out_again(community: Community) -> None:
    """PostgreSQL reads run in autocommit mode: a connection that broke meanwhile is dropped
    from the pool, and every connection the pool hands out later is a normal one."""
    engine = community.app.state.engine
    with community.session() as session:
        fill(session, 10)
    with pytest.raises(psycopg.OperationalError), tree.RawReads(engine) as reads:
        (pid,) = reads.rows(select(func.pg_backend_pid()), {})[0]
        with engine.connect() as other:
            other.execute(select(func.pg_terminate_backend(pid)))
            other.commit()
        reads.rows(select(func.pg_backend_pid()), {})
    for _ in range(engine.pool.size() + 1):
        with tree.RawReads(engine) as reads:
            assert tree.published_and_committed(reads)[1] == 10
    with engine.connect() as connection:
        assert connection.connection.dbapi_connection.autocommit is False
        connection.rollback()
