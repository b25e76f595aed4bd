"""The steady-poll fast path (app/requests/poll_fast.py): it answers exactly what the route
answers, burns the nonce once, and leaves every other call, untouched, to the route; and the
pool drops a connection the server closed without a round trip (app/db.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text, update
from starlette.types import Message, Receive, Scope, Send

from app.db import make_engine
from app.devices.models import Device
from app.permissions import Role
from app.requests import device_routes, poll_fast
from app.settings import Settings
from tests.server.factories import Clock, Community, EnrolledDevice
from tests.server.requests.helpers import World, make_world, nonces_used

POLL = "/api/device/asks"


# The app's background jobs (log integrator, checkpoint publisher, scheduler) each borrow a
# pooled connection now and then. The fast path takes its own connection from the idle ones
# when it first needs one and passes the call on when it finds none idle (as designed), so a
# test whose app has made only one connection could see its poll deferred whenever a job
# holds that one. Each test starts with more idle than the jobs can hold.
_IDLE_AT_START = 4


@pytest.fixture(autouse=True)
def _idle_connections(request: pytest.FixtureRequest) -> None:
    if "community" not in request.fixturenames:
        return
    engine = request.getfixturevalue("community").app.state.engine
    if engine.dialect.name != "postgresql":
        return
    held = [engine.raw_connection() for _ in range(_IDLE_AT_START)]
    for pooled in held:
        pooled.close()
    assert engine.pool.checkedin() >= _IDLE_AT_START


class Answered:
    """What the fast path did with one call: its response, or that it passed the call on."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.passed_on = False

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.messages[1:])


def _fast_poll(
    community: Community,
    signed: dict[str, str],
    polls: Any = None,
    **scope: Any,
) -> Answered:
    """One call through the real middleware (`polls`: one kept across calls, with what it keeps
    per worker; by default a new one); the app behind it only records being reached."""
    return _fast_polls(community, [signed], polls, **scope)[0]


def _fast_polls(
    community: Community,
    signed_calls: list[dict[str, str]],
    polls: Any = None,
    **scope: Any,
) -> list[Answered]:
    """Calls that reach the middleware together: all ready on the event loop at once, as when
    several connections' requests are read in one turn of the loop."""
    answers = [Answered() for _ in signed_calls]
    middleware = poll_fast.DevicePolls(None) if polls is None else polls  # type: ignore[arg-type]
    reached: set[int] = set()

    async def behind(call: Scope, _receive: Receive, _send: Send) -> None:
        reached.add(call["call"])

    middleware.app = behind

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def one(at: int, signed: dict[str, str]) -> None:
        async def send(message: Message) -> None:
            answers[at].messages.append(message)

        call = {
            "type": "http",
            "method": "GET",
            "path": POLL,
            "query_string": b"",
            "root_path": "",
            "headers": [(k.lower().encode(), v.encode()) for k, v in signed.items()],
            "app": community.app,
            "call": at,
            **scope,
        }
        await middleware(call, receive, send)

    async def all_at_once() -> None:
        await asyncio.gather(*(one(at, signed) for at, signed in enumerate(signed_calls)))

    asyncio.run(all_at_once())
    if polls is None:
        middleware.close()  # its own connection; a kept one closes with the engine
    for at in reached:
        answers[at].passed_on = True
    return answers


def _headers(world: World, device: EnrolledDevice) -> dict[str, str]:
    return world.community.device_headers(device, "GET", POLL, timestamp=world.stamp())


def _route_answer(world: World, device: EnrolledDevice) -> bytes:
    """The route's own answer to a fresh signed poll, bypassing the fast path."""
    app = world.community.app
    return device_routes._poll_transaction(
        app.state.sessionmaker,
        app.state.settings,
        app.state.clock,
        _headers(world, device),  # type: ignore[arg-type]
        POLL,
        b"",
    )


def _delivered_world(community: Community) -> tuple[World, EnrolledDevice]:
    world = make_world(community)
    device = world.located_device(community.person(Role.resident), 10, 10)
    world.open_request()
    assert len(world.device_asks(device)) == 1  # the first delivery, logged by the route
    return world, device


@pytest.mark.postgresql_only  # the fast path serves PostgreSQL; SQLite polls take the route
def test_a_steady_poll_is_answered_as_the_route_answers_it(
    community: Community, client: TestClient, clock: Clock
) -> None:
    world, device = _delivered_world(community)
    idle = community.enrol_device(community.person(Role.resident), name="idle")
    before = nonces_used(community, device)

    answered = _fast_poll(community, _headers(world, device))
    assert not answered.passed_on
    assert answered.messages[0]["status"] == 200
    assert dict(answered.messages[0]["headers"])[b"content-type"] == b"application/json"
    assert answered.body == _route_answer(world, device)
    assert nonces_used(community, device) == before + 2  # its own and the route's

    # No asks at all: "[]", as from the route; the first poll of a device sets last_seen_at.
    none = _fast_poll(community, _headers(world, idle))
    assert not none.passed_on and none.body == b"[]"
    with community.session() as session:
        assert session.scalar(select(Device.last_seen_at).where(Device.id == idle.id))

    # The cached JSON of an ask follows its row: a closed request shows as closed.
    asks = world.device_asks(device)
    ask_id, request_id = asks[0]["ask_id"], asks[0]["request"]["id"]
    assert world.consent(device, ask_id, request_id, ["c-1"]).status_code == 200
    consented = _fast_poll(community, _headers(world, device))
    assert not consented.passed_on
    assert consented.body == _route_answer(world, device)
    assert b'"consented"' in consented.body


@pytest.mark.postgresql_only
def test_a_consented_ask_lists_uploaded_clips_as_the_route_does(
    community: Community, client: TestClient
) -> None:
    world, device = _delivered_world(community)
    ask = world.device_asks(device)[0]
    shared = world.clip("clip-1")
    assert world.consent(device, ask["ask_id"], ask["request"]["id"], ["clip-1"]).status_code == 200
    assert world.upload(device, ask["ask_id"], shared).status_code == 201
    answered = _fast_poll(community, _headers(world, device))
    assert not answered.passed_on
    assert b'"uploaded_clip_ids":["clip-1"]' in answered.body
    assert answered.body == _route_answer(world, device)


@pytest.mark.postgresql_only
def test_every_other_call_is_passed_on_untouched(
    community: Community, client: TestClient, settings: Settings
) -> None:
    world = make_world(community)
    device = world.located_device(community.person(Role.resident), 10, 10)
    world.open_request()
    before = nonces_used(community, device)

    # A first delivery is the route's (it logs ask:deliver with a durable commit).
    first = _fast_poll(community, _headers(world, device))
    assert first.passed_on and first.messages == []
    assert nonces_used(community, device) == before
    world.device_asks(device)
    before = nonces_used(community, device)

    forged = _headers(world, device)
    forged["X-Porchlight-Signature"] = _headers(world, device)["X-Porchlight-Signature"]
    wrong_credential = {**_headers(world, device), "Authorization": "Device dev_wrong"}
    stale = community.device_headers(
        device, "GET", POLL, timestamp=world.stamp() - settings.device_clock_skew_seconds - 5
    )
    unknown = {**_headers(world, device), "X-Porchlight-Device": "999999"}
    huge = {**_headers(world, device), "X-Porchlight-Device": "9" * 30}
    for headers in (forged, wrong_credential, stale, unknown, huge, {}):
        refused = _fast_poll(community, headers)
        assert refused.passed_on and refused.messages == []
    # A query string, a body or a repeated header: the route reads those.
    signed = _headers(world, device)
    assert _fast_poll(community, signed, query_string=b"x=1").passed_on
    with_body = {**signed, "Content-Length": "2"}
    assert _fast_poll(community, with_body).passed_on
    repeated = _fast_poll(
        community,
        signed,
        headers=[(k.lower().encode(), v.encode()) for k, v in signed.items()]
        + [(b"x-porchlight-nonce", b"0" * 32)],
    )
    assert repeated.passed_on
    assert nonces_used(community, device) == before  # none of them burned a nonce

    # No idle pooled connection to take its own from: the loop does not wait for one; the
    # route does.
    engine = community.app.state.engine
    held = []
    while engine.pool.checkedin():
        held.append(engine.raw_connection())
    try:
        assert _fast_poll(community, signed).passed_on
    finally:
        for connection in held:
            connection.close()
    assert nonces_used(community, device) == before

    # A replay: burned once here, then passed on; the route refuses it.
    once = _fast_poll(community, signed)
    assert not once.passed_on
    again = _fast_poll(community, signed)
    assert again.passed_on
    replay = client.get(POLL, headers=signed)
    assert replay.status_code == 401 and "replayed" in replay.json()["message"]
    assert nonces_used(community, device) == before + 1


@pytest.mark.postgresql_only
def test_a_locked_device_row_is_left_to_the_route(
    community: Community, client: TestClient, clock: Clock, database_url: str
) -> None:
    world, device = _delivered_world(community)
    clock.advance(seconds=61)  # last_seen_at is due: the poll updates the device row
    before = nonces_used(community, device)
    other = create_engine(database_url)
    try:
        with other.connect() as holder:
            # A transaction holding the row (as a revocation waiting for the log would).
            holder.execute(text("SELECT 1 FROM devices WHERE id = :d FOR UPDATE"), {"d": device.id})
            answered = _fast_poll(community, _headers(world, device))
            assert answered.passed_on  # after the lock timeout, not after the holder ends
            assert nonces_used(community, device) == before
            holder.rollback()
    finally:
        other.dispose()
    # The connection it used is sound again: the next poll is answered here.
    assert not _fast_poll(community, _headers(world, device)).passed_on
    assert nonces_used(community, device) == before + 1


@pytest.mark.postgresql_only
def test_the_settings_are_local_to_the_poll(community: Community, client: TestClient) -> None:
    world, device = _delivered_world(community)
    assert not _fast_poll(community, _headers(world, device)).passed_on
    # Every idle pooled connection is as it was: the poll's settings stay on its own.
    engine = community.app.state.engine
    held = []
    while engine.pool.checkedin():
        held.append(engine.raw_connection())
    try:
        assert held
        for pooled in held:
            connection = pooled.driver_connection
            assert connection.autocommit is False
            with connection.cursor() as cursor:
                cursor.execute("SHOW synchronous_commit")
                assert cursor.fetchone() == ("on",)
                cursor.execute("SHOW lock_timeout")
                assert cursor.fetchone() == ("0",)
            connection.rollback()
    finally:
        for pooled in held:
            pooled.close()


@pytest.mark.postgresql_only
def test_a_busy_pool_does_not_turn_steady_polls_away(
    community: Community, client: TestClient
) -> None:
    world, device = _delivered_world(community)
    polls = poll_fast.DevicePolls(None)  # type: ignore[arg-type]
    assert not _fast_poll(community, _headers(world, device), polls).passed_on
    # Every pooled connection busy (routes on worker threads): the poll runs on the
    # middleware's own connection all the same.
    engine = community.app.state.engine
    held = []
    while engine.pool.checkedin():
        held.append(engine.raw_connection())
    try:
        assert not _fast_poll(community, _headers(world, device), polls).passed_on
    finally:
        for connection in held:
            connection.close()
    # The connection of its own, detached from the pool, closes with the engine.
    assert polls._own is not None
    own = polls._own.dbapi_connection
    engine.dispose()
    assert own.closed and polls._own is None


@pytest.mark.postgresql_only
def test_a_table_lock_holds_the_event_loop_no_longer_than_the_lock_timeout(
    community: Community, client: TestClient, database_url: str
) -> None:
    """A table's own lock (a migration's, say) is taken before the poll's statement runs, so
    before its statement-local settings apply; the connection's session-wide lock_timeout
    must end that wait too, or the worker's whole event loop waits with it."""
    world, device = _delivered_world(community)
    polls = poll_fast.DevicePolls(None)  # type: ignore[arg-type]
    assert not _fast_poll(community, _headers(world, device), polls).passed_on  # key kept
    signed = _headers(world, device)
    before = nonces_used(community, device)
    answered: list[Answered] = []
    other = create_engine(database_url)
    try:
        with other.connect() as holder:
            holder.execute(text("LOCK TABLE device_nonces IN ACCESS EXCLUSIVE MODE"))
            poll = threading.Thread(
                target=lambda: answered.append(_fast_poll(community, signed, polls))
            )
            started = time.monotonic()
            poll.start()
            poll.join(timeout=5)
            waited = time.monotonic() - started
            still_waiting = poll.is_alive()
            holder.rollback()  # the lock goes; a poll still waiting ends now
        poll.join()
    finally:
        other.dispose()
    assert not still_waiting, "the poll waited for the table lock"
    assert answered[0].passed_on and waited < 2
    assert nonces_used(community, device) == before
    # A new connection of its own, and the next poll is answered here again.
    assert not _fast_poll(community, _headers(world, device), polls).passed_on
    polls.close()


def _terminate_others(url: Any) -> None:
    """End every other session on the database, as a PostgreSQL restart would."""
    # Autocommit: pg_stat_activity is read once per transaction, so within one transaction
    # the ended sessions would stay listed and the wait below would run to its deadline.
    killer = create_engine(url, isolation_level="AUTOCOMMIT")
    others = text(
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    try:
        with killer.connect() as connection:
            for pid in connection.scalars(others).all():
                connection.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})
            deadline = time.monotonic() + 10
            while connection.scalars(others).all() and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        killer.dispose()


@pytest.mark.postgresql_only
def test_a_connection_the_server_closed_is_not_handed_out(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        for _ in range(3):
            with engine.connect() as connection:
                first = connection.scalar(text("SELECT pg_backend_pid()"))
            _terminate_others(engine.url)
            # Without a check at checkout this would fail: the pooled session is gone.
            with engine.connect() as connection:
                assert connection.scalar(text("SELECT pg_backend_pid()")) != first
    finally:
        engine.dispose()


@pytest.mark.postgresql_only
def test_the_fast_path_recovers_from_a_lost_server(
    community: Community, client: TestClient
) -> None:
    world, device = _delivered_world(community)
    _terminate_others(community.app.state.engine.url)
    assert not _fast_poll(community, _headers(world, device)).passed_on
    assert client.get("/healthz").status_code == 200


class _Statements:
    """Counts the statements psycopg sends from this thread (the app's background threads,
    e.g. the log integrator, send their own)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        execute = psycopg.Cursor.execute
        thread = threading.get_ident()

        def counted(cursor: Any, *args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() == thread:
                self.count += 1
            return execute(cursor, *args, **kwargs)

        monkeypatch.setattr(psycopg.Cursor, "execute", counted)


@pytest.mark.postgresql_only
def test_a_steady_poll_is_one_statement_once_the_key_is_kept(
    community: Community, client: TestClient, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, device = _delivered_world(community)
    polls = poll_fast.DevicePolls(None)  # type: ignore[arg-type]
    statements = _Statements(monkeypatch)
    first = _fast_poll(community, _headers(world, device), polls)
    # Its connection's session setting (once), the key block, then the poll.
    assert not first.passed_on and statements.count == 3

    def last_seen() -> Any:
        with community.session() as session:
            return session.scalar(select(Device.last_seen_at).where(Device.id == device.id))

    for advance, refreshed in ((61, True), (30, False), (31, True)):
        seen = last_seen()
        statements.count = 0
        clock.advance(seconds=advance)  # last_seen_at is refreshed by the same statement, if due
        answered = _fast_poll(community, _headers(world, device), polls)
        assert not answered.passed_on and statements.count == 1
        assert answered.body == first.body
        assert (last_seen() != seen) is refreshed
    # A replay of a checked call: nothing burned or answered here, the route refuses it.
    signed = _headers(world, device)
    assert not _fast_poll(community, signed, polls).passed_on
    before = nonces_used(community, device)
    assert _fast_poll(community, signed, polls).passed_on
    assert nonces_used(community, device) == before
    replay = client.get(POLL, headers=signed)
    assert replay.status_code == 401 and "replayed" in replay.json()["message"]


@pytest.mark.postgresql_only
def test_revocation_is_never_kept(community: Community, client: TestClient) -> None:
    resident = community.person(Role.resident)
    world = make_world(community)
    device = world.located_device(resident, 10, 10)
    polls = poll_fast.DevicePolls(None)  # type: ignore[arg-type]
    assert not _fast_poll(community, _headers(world, device), polls).passed_on  # key kept
    revoked = client.post(f"/api/devices/{device.id}/revoke", headers=community.auth(resident))
    assert revoked.status_code == 200, revoked.text
    before = nonces_used(community, device)
    signed = _headers(world, device)
    # The very next poll: the statement reads the revocation, burns nothing, and the route
    # refuses the call exactly as sent.
    assert _fast_poll(community, signed, polls).passed_on
    assert nonces_used(community, device) == before
    refused = client.get(POLL, headers=signed)
    assert refused.status_code == 401
    assert refused.json()["message"] == "device call not authenticated"


@pytest.mark.postgresql_only
def test_kept_key_material_must_match_the_device_row(
    community: Community, client: TestClient
) -> None:
    world = make_world(community)
    device = world.located_device(community.person(Role.resident), 10, 10)
    polls = poll_fast.DevicePolls(None)  # type: ignore[arg-type]
    assert not _fast_poll(community, _headers(world, device), polls).passed_on  # key kept
    # A row that no longer has the kept credential hash (never done by the app: a guard):
    # nothing is burned and the route decides.
    with community.session() as session, session.begin():
        session.execute(
            update(Device).where(Device.id == device.id).values(credential_hash="0" * 64)
        )
    before = nonces_used(community, device)
    assert _fast_poll(community, _headers(world, device), polls).passed_on
    assert nonces_used(community, device) == before


@pytest.mark.postgresql_only
def test_a_device_enrolled_after_its_neighbours_were_read_is_answered(
    community: Community, client: TestClient
) -> None:
    world = make_world(community)
    resident = community.person(Role.resident)
    first = world.located_device(resident, 10, 10)
    polls = poll_fast.DevicePolls(None)  # type: ignore[arg-type]
    assert not _fast_poll(community, _headers(world, first), polls).passed_on
    unknown = {**_headers(world, first), "X-Porchlight-Device": str(first.id + 1)}
    assert _fast_poll(community, unknown, polls).passed_on  # not enrolled yet: the route's
    later = world.located_device(resident, 10, 10)
    assert later.id // 128 == first.id // 128  # in the block read before
    answered = _fast_poll(community, _headers(world, later), polls)
    assert not answered.passed_on and answered.body == b"[]"


@pytest.mark.postgresql_only
def test_polls_checked_together_are_answered_by_one_statement(
    community: Community, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    world, device = _delivered_world(community)
    resident = community.person(Role.resident)
    quiet = [world.located_device(resident, 10, 10 + i) for i in range(3)]
    undelivered = world.located_device(resident, 10, 20)
    world.open_request()  # every device above has an undelivered ask of this request now
    for one in (device, *quiet):
        world.device_asks(one)  # delivered, by the route
    polls = poll_fast.DevicePolls(None)  # type: ignore[arg-type]
    # Keys are read in blocks of neighbouring ids: after this every device's key is kept, so
    # the calls below are all checked before the statement runs.
    assert not _fast_poll(community, _headers(world, device), polls).passed_on

    replayed = _headers(world, device)
    forged = {**_headers(world, quiet[0]), "Authorization": "Device dev_wrong"}
    calls = [
        _headers(world, device),
        replayed,
        *(_headers(world, one) for one in quiet),
        replayed,  # the same call twice at once: burned once; the copy is the route's
        forged,
        _headers(world, undelivered),  # a first delivery: the route's
        _headers(world, device),  # the same device with another nonce: answered too
    ]
    before = {d.id: nonces_used(community, d) for d in (device, *quiet, undelivered)}
    statements = _Statements(monkeypatch)
    answered = _fast_polls(community, calls, polls)
    assert statements.count == 1
    assert [at for at, one in enumerate(answered) if one.passed_on] == [5, 6, 7]
    assert nonces_used(community, device) == before[device.id] + 3
    for one in quiet:
        assert nonces_used(community, one) == before[one.id] + 1
    assert nonces_used(community, undelivered) == before[undelivered.id]
    for at in (0, 1, 8):
        assert answered[at].body == _route_answer(world, device)
    for at, one in zip((2, 3, 4), quiet, strict=True):
        assert answered[at].body == _route_answer(world, one)
        assert answered[at].body.count(b'"ask_id"') == 1
    replay = client.get(POLL, headers=replayed)
    assert replay.status_code == 401 and "replayed" in replay.json()["message"]

    # More calls than one statement holds: one statement per 16.
    many = [_headers(world, quiet[at % 3]) for at in range(20)]
    statements.count = 0
    answered = _fast_polls(community, many, polls)
    assert statements.count == 2
    assert not any(one.passed_on for one in answered)
    assert {one.body for one in answered} == {_route_answer(world, one) for one in quiet}


@pytest.mark.postgresql_only
def test_a_shared_statement_that_fails_leaves_every_call_to_the_route(
    community: Community, client: TestClient, clock: Clock, database_url: str
) -> None:
    world, device = _delivered_world(community)
    other_device = world.located_device(community.person(Role.resident), 10, 12)
    world.open_request()
    for one in (device, other_device):
        world.device_asks(one)
    clock.advance(seconds=61)  # last_seen_at is due: the statement updates both device rows
    polls = poll_fast.DevicePolls(None)  # type: ignore[arg-type]
    assert not _fast_poll(community, _headers(world, device), polls).passed_on  # keys kept
    clock.advance(seconds=61)
    before = [nonces_used(community, one) for one in (device, other_device)]
    holder_engine = create_engine(database_url)
    try:
        with holder_engine.connect() as holder:
            holder.execute(text("SELECT 1 FROM devices WHERE id = :d FOR UPDATE"), {"d": device.id})
            calls = [_headers(world, other_device), _headers(world, device)]
            answered = _fast_polls(community, calls, polls)
            # One lock wait stops the whole statement: nothing is burned, for either call.
            assert [one.passed_on for one in answered] == [True, True]
            assert [nonces_used(community, one) for one in (device, other_device)] == before
            holder.rollback()
    finally:
        holder_engine.dispose()
    answered = _fast_polls(
        community, [_headers(world, other_device), _headers(world, device)], polls
    )
    assert not any(one.passed_on for one in answered)
    assert [nonces_used(community, one) for one in (device, other_device)] == [
        count + 1 for count in before
    ]
