"""The steady device poll (`GET /api/device/asks`) answered before FastAPI routing, on PostgreSQL.

Every camera polls every few seconds, so this is the busiest call in the system, and nearly
every poll is the same: an authenticated device whose asks have all been delivered before.
For that poll, FastAPI's middleware, routing and request machinery, a worker-thread hop and
SQLAlchemy's session and statement machinery cost several times the database work. This ASGI
middleware answers it on the event loop with ONE statement on a connection of its own, in
autocommit mode, with a 20 ms lock_timeout for the whole session (see `_own_connection`):

1. the credential, the signature and the clock are checked first, in Python, exactly as
   `app.devices.service.check_call` checks them, against the device's key and credential
   hash kept per worker (`_Keys`): both are written once, at enrolment, and never change. A
   device not yet kept is read with its neighbours by id (one range scan per 128 ids);
2. one statement (a data-modifying WITH) reads the device's open asks, burns the nonce only
   if the device row still has that key and credential hash, is not revoked and has no ask
   awaiting its first delivery, refreshes last_seen_at at most once a minute, and returns the
   asks (with their uploaded clips) only if the nonce was burned. It commits without waiting
   for the disk (`devices.make_durable` says why a poll that changes nothing else may); a
   lock wait longer than 20 ms stops it. Revocation is never kept: every poll reads it.
   Polls that were checked in the same turn of the event loop (several connections' requests
   read at once, as happens whenever polls queue up) share one statement of the same form,
   up to 16 at a time: the statement's fixed cost is most of a poll's database work, so a
   queue is worked off faster than single polls would do it.

Only that success is answered here. Anything else goes on, untouched, to the route in
app/requests/device_routes.py, which answers it as it always has, in one transaction: a
refusal of any kind (nothing is burned unless every check has passed, so the route sees the
call exactly as sent; a replay reaches it after the statement found the nonce used), a
revoked or unknown device, a first delivery (logged `ask:deliver` with a durable commit), a
query string or a body, SQLite, and any database error (the connection is dropped). The route
also documents the call in the OpenAPI schema. The body is built by the route's own builder
(`asks.device_ask_json`), byte for byte; an ask's JSON depends only on its row, so it is kept
per row and rebuilt when any column changes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

import psycopg
from cryptography.exceptions import InvalidSignature
from sqlalchemy import (
    Engine,
    Select,
    Table,
    bindparam,
    case,
    event,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.pool import PoolProxiedConnection, QueuePool
from starlette.types import ASGIApp, Receive, Scope, Send

from app import tokens
from app.db import refuse_closed_connection
from app.devices import service as devices
from app.devices.models import Device
from app.requests import asks
from app.requests.models import Ask, SharedClip
from porchlight.client import device_signing_message

POLL_PATH = "/api/device/asks"
# Asks' JSON kept per worker (a few KiB each with its row): one open ask each for 16,384
# devices; past that it starts again empty.
_ASK_CACHE_SIZE = 16384

_DEVICES = cast(Table, Device.__table__)
_ASKS = cast(Table, Ask.__table__)
_SHARED = cast(Table, SharedClip.__table__)


class _Compiled(NamedTuple):
    sql: str
    params: dict[str, Any]  # the literals SQLAlchemy made bind parameters of


def _compile(statement: Any, dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)
    return _Compiled(str(compiled), dict(compiled.params))


def _open_asks(device_id: Any) -> Select[Any]:
    """The open asks of `device_id` (a bind or a column), each with its uploaded clips (NULL for
    none) and created_at."""
    a, clip_id = _ASKS.c, _SHARED.c.clip_id
    # As asks.uploaded_clip_ids: only a consented ask has clips (a pending one, every steady
    # poll's case, runs no subquery), by clip id.
    uploaded = (
        select(func.array_agg(aggregate_order_by(clip_id, clip_id)))
        .where(asks.uploaded_clips_of(a.id))
        .scalar_subquery()
    )
    return (
        select(*asks.device_ask_columns())
        .add_columns(
            case((a.state == "consented", uploaded)).label("uploaded"),
            a.created_at.label("created_at"),
        )
        .select_from(asks.device_ask_joins())
        .where(asks.open_asks_of(device_id))
    )


# The poll's one statement. The nonce is burned only if the device row has the key and the
# credential hash the call was checked against, is not revoked, and has no ask awaiting its
# first delivery; then last_seen_at is refreshed if due, and the open asks come back (one row
# with NULL ask columns for none). No row: nothing was written, the route answers. Data-
# modifying WITH queries run to completion whether or not the SELECT reads them; open_asks,
# read twice, is computed once, so the asks returned are those the burn's condition saw.
# The settings are local to this statement's implicit transaction; lock_timeout is set by
# the row the INSERT reads, so before any row lock wait. A lock wait longer than 20 ms (a
# concurrent call carrying the same nonce, or a transaction holding the device's row, e.g. a
# revocation waiting for the log) stops the statement: the event loop must not wait on it, so
# the route then answers the call on a worker thread. The locks on the tables themselves are
# taken before the statement runs at all; the connection's own session-wide lock_timeout
# (`_own_connection`) bounds those waits (a migration's, say) the same way.
_POLL_SQL = """
WITH open_asks AS (
    {open_asks}
), burned AS (
    INSERT INTO device_nonces (device_id, nonce, seen_at)
    SELECT caller.id, %(nonce)s, %(now)s
    FROM devices AS caller,
         (SELECT set_config('lock_timeout', '20ms', true),
                 set_config('synchronous_commit', 'off', true)) AS settings
    WHERE caller.id = %(device_id)s
      AND caller.public_key = %(public_key)s
      AND caller.credential_hash = %(credential_hash)s
      AND caller.revoked_at IS NULL
      AND NOT EXISTS (SELECT FROM open_asks WHERE open_asks.delivered_at IS NULL)
    ON CONFLICT DO NOTHING
    RETURNING device_id
), touched AS (
    UPDATE devices SET last_seen_at = %(now)s
    WHERE id IN (SELECT device_id FROM burned)
      AND (last_seen_at IS NULL OR last_seen_at <= %(seen_before)s)
)
SELECT open_asks.* FROM burned LEFT JOIN open_asks ON true
ORDER BY open_asks.created_at, open_asks.id
"""

# Polls checked while the event loop was busy are burned and answered together: a statement
# costs PostgreSQL and psycopg about the same for one poll as for a few (executor start-up,
# the round trip, the commit), so when polls queue up each costs less, and the queue drains
# faster than it grew. The same statement as above for up to _BATCH calls at once, one VALUES
# row each (padded with NULL rows to 2, 4, 8 or 16 rows, so there are four statements to
# prepare, not fifteen). VALUES rows, unlike an array parameter, let a cached generic plan
# know how many calls there are (unnest of a parameter is estimated at 100 rows, which made
# the planner plan every execution anew, ~1 ms). The LATERAL subqueries with OFFSET 0 keep
# each call's reads on the devices and asks indexes in any plan. `at` is the call's place in
# the batch; a call whose nonce was not burned has no row. A batch never holds one nonce
# twice (the later copy goes to the route, which finds it burned). A lone call keeps the
# single statement above: sent through the 2-row statement, padded, it cost ~0.1 ms more
# Python and 0.05-0.1 ms more PostgreSQL per poll (3 x 3,000 polls each way, alternated).
_BATCH = 16
_BATCH_SQL = """
WITH calls (at, device_id, nonce, public_key, credential_hash) AS (
    VALUES {calls}
), open_asks AS (
    SELECT polled.device_id AS polled_device, device_asks.*
    FROM (SELECT DISTINCT device_id FROM calls) AS polled CROSS JOIN LATERAL (
        {open_asks}
        OFFSET 0
    ) AS device_asks
), burned AS (
    INSERT INTO device_nonces (device_id, nonce, seen_at)
    SELECT calls.device_id, calls.nonce, %(now)s
    FROM calls CROSS JOIN LATERAL (
            SELECT FROM devices AS caller
            WHERE caller.id = calls.device_id
              AND caller.public_key = calls.public_key
              AND caller.credential_hash = calls.credential_hash
              AND caller.revoked_at IS NULL
            OFFSET 0
         ) AS caller,
         (SELECT set_config('lock_timeout', '20ms', true),
                 set_config('synchronous_commit', 'off', true)) AS settings
    WHERE NOT EXISTS (
        SELECT FROM open_asks
        WHERE open_asks.polled_device = calls.device_id AND open_asks.delivered_at IS NULL
    )
    ON CONFLICT DO NOTHING
    RETURNING device_id, nonce
), touched AS (
    UPDATE devices SET last_seen_at = %(now)s
    FROM (SELECT DISTINCT device_id FROM burned) AS seen
    WHERE devices.id = seen.device_id
      AND (last_seen_at IS NULL OR last_seen_at <= %(seen_before)s)
)
SELECT calls.at, open_asks.* FROM calls
JOIN burned ON burned.device_id = calls.device_id AND burned.nonce = calls.nonce
LEFT JOIN open_asks ON open_asks.polled_device = calls.device_id
ORDER BY calls.at, open_asks.created_at, open_asks.id
"""
_BATCH_CALL = (
    "({at}, %(device_id_{at})s::integer, %(nonce_{at})s::text, %(public_key_{at})s::bytea, "
    "%(credential_hash_{at})s::text)"
)

# Key material is read for this many consecutive device ids at once (one range scan), so a
# worker that starts among 10,000 polling devices reads it in ~80 statements, not 10,000.
_KEY_BLOCK = 128
# Devices' key material kept per worker (a few hundred bytes each); past that it starts again.
_KEY_CACHE_SIZE = 65536
_KEYS_SQL = (
    "SELECT id, public_key, credential_hash FROM devices "
    "WHERE id >= %(first)s AND id < %(first)s + %(count)s"
)


class _Keys(NamedTuple):
    """A device's verification material: written at enrolment, never changed (service.enrol)."""

    public_key: bytes
    credential_hash: str


_HEADERS = {
    b"authorization": 0,
    b"x-porchlight-device": 1,
    b"x-porchlight-timestamp": 2,
    b"x-porchlight-nonce": 3,
    b"x-porchlight-signature": 4,
}
_BODY_HEADERS = (b"content-length", b"transfer-encoding")


class _Call(NamedTuple):
    credential: str
    device_id: int
    stamp: str
    nonce: str
    signature: bytes


def _parse(scope: Scope) -> _Call | None:
    """The signed-call headers, if the request is exactly a plain signed poll; else None."""
    if scope.get("query_string") or scope.get("root_path"):
        return None
    values: list[bytes | None] = [None] * 5
    for name, value in scope["headers"]:
        at = _HEADERS.get(name)
        if at is not None:
            if values[at] is not None:
                return None  # a repeated header: the route decides
            values[at] = value
        elif name in _BODY_HEADERS and value != b"0":
            return None
    authorization, device_id, stamp, nonce, signature = values
    if authorization is None or device_id is None or stamp is None or nonce is None:
        return None
    if signature is None or not authorization.startswith(b"Device "):
        return None
    # bytes.isdigit() is ASCII digits only; the lengths keep the numbers in range.
    if not (device_id.isdigit() and len(device_id) < 19 and stamp.isdigit() and len(stamp) < 19):
        return None
    if len(nonce) != 32 or nonce.strip(b"0123456789abcdef"):
        return None
    try:
        signature_bytes = base64.b64decode(signature, validate=True)
        credential = authorization[7:].decode("latin-1")  # as Starlette decodes headers
    except binascii.Error:
        return None
    return _Call(credential, int(device_id), stamp.decode(), nonce.decode(), signature_bytes)


class _AskRow(NamedTuple):
    """The columns `asks.device_ask_json` reads, with times in UTC as the ORM types give them."""

    id: str
    state: str
    deadline: datetime
    receipt: str | None
    request_id: int
    request_state: str
    warrant_court: str
    warrant_docket_number: str
    warrant_judge: str
    warrant_issued_on: Any
    warrant_expires_on: Any
    warrant_document_sha256: str
    offence: str
    window_start: datetime
    window_end: datetime
    area_lat: float
    area_lon: float
    area_radius_m: int
    agency: str
    jurisdiction: str
    recipient: str
    officer: str


class _Waiting(NamedTuple):
    """A call whose statement has not run yet; `keys` is None if they are not kept yet."""

    call: _Call
    keys: _Keys | None
    now: datetime
    answer: asyncio.Future[bytes | None]


class DevicePolls:
    """ASGI middleware: the steady signed poll, answered before routing (module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._engine: Engine | None = None
        # The connection the statements run on, detached from the engine's pool (see
        # `_own_connection`), or None until one is needed.
        self._own: PoolProxiedConnection | None = None
        self._poll_statement: _Compiled | None = None
        self._batch_statements: dict[int, _Compiled] = {}
        self._keys: dict[int, _Keys] = {}
        self._ask_json: dict[tuple[Any, ...], bytes] = {}
        self._waiting: list[_Waiting] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == POLL_PATH:
            call = _parse(scope)
            body = await self._answer(scope["app"].state, call) if call is not None else None
            if body is not None:
                await send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [
                            (b"content-length", str(len(body)).encode("ascii")),
                            (b"content-type", b"application/json"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    async def _answer(self, state: Any, call: _Call) -> bytes | None:
        """The poll's body if it is a steady success (nonce burned); None: leave it to the route.

        A call whose key is kept is checked at once; then it waits for the statement, which
        runs once every call the loop already had ready has been checked (`_run_waiting`).
        """
        engine: Engine = state.engine
        if engine.dialect.name != "postgresql":
            return None
        if self._engine is not engine:
            self._prepare(engine)
        now: datetime = state.clock()
        keys = self._keys.get(call.device_id)
        if keys is not None and not _checked(call, keys, state.settings, now):
            return None  # refused: the route says why, exactly as it always has
        loop = asyncio.get_running_loop()
        waiting = _Waiting(call, keys, now, loop.create_future())
        self._waiting.append(waiting)
        if len(self._waiting) == 1:
            # Queued behind the callbacks already ready: the calls the loop has read by now.
            loop.call_soon(self._run_waiting, state)
        return await waiting.answer

    def _run_waiting(self, state: Any) -> None:
        waiting, self._waiting = self._waiting, []
        try:
            bodies = self._answer_all(state, waiting)
        except Exception as error:  # a bug, not a refusal: each call fails as it used to
            for one in waiting:
                if not one.answer.done():
                    one.answer.set_exception(error)
            return
        for one, body in zip(waiting, bodies, strict=True):
            if not one.answer.done():  # else its request was cancelled meanwhile
                one.answer.set_result(body)

    def _answer_all(self, state: Any, waiting: list[_Waiting]) -> list[bytes | None]:
        """Each waiting call's body, or None where the route is to answer it."""
        engine: Engine = state.engine
        passed_on: list[bytes | None] = [None] * len(waiting)
        connection = self._own_connection(engine)
        if connection is None:
            return passed_on
        try:
            with connection.cursor() as cursor:
                checked = self._checked_calls(cursor, waiting, state.settings)
                now: datetime = state.clock()
                found = self._poll(cursor, [call for _, call in checked], now)
        except psycopg.Error:
            # A lock timeout, a lost server, anything: this connection is not reused, and the
            # route answers every call (it recovers from a lost server as every route does).
            self.close()
            return passed_on
        bodies = passed_on
        for (at, _), rows in zip(checked, found, strict=True):
            if rows is not None:
                bodies[at] = b"[" + b",".join(self._json(row) for row in rows) + b"]"
        return bodies

    def _own_connection(self, engine: Engine) -> psycopg.Connection[Any] | None:
        """The connection the statements run on, or None: the route is to answer.

        One per middleware (per worker), taken from the engine's pool once and detached from
        it, so the pool's connections stay the routes' and a busy pool never turns polls away.
        The event loop runs one statement at a time, so one connection is all it can use. It
        is in autocommit mode, with a session-wide lock_timeout of 20 ms: every lock wait,
        including those for the tables, which come before a statement's own settings apply,
        ends within that, and the route answers. A connection the server has closed (a
        restart) is noticed without a round trip, as the pool notices it (app/db.py), and
        replaced; so is one a statement failed on.
        """
        own = self._own
        if own is not None:
            try:
                refuse_closed_connection(own.dbapi_connection, None, None)
            except DisconnectionError:
                self.close()
            else:
                return cast(psycopg.Connection[Any], own.dbapi_connection)
        pool = engine.pool
        if isinstance(pool, QueuePool) and pool.checkedin() == 0:
            # No idle connection: taking one could mean waiting for a worker thread to return
            # one, or connecting, on the event loop; the route waits on a worker thread instead.
            return None
        try:
            pooled = engine.raw_connection()
        except DBAPIError:
            return None  # cannot connect: the route says so as every route does
        connection = cast(psycopg.Connection[Any], pooled.driver_connection)
        try:
            connection.rollback()  # idle after a check-in; this only makes sure
            connection.autocommit = True
            connection.execute("SET lock_timeout = '20ms'")
        except psycopg.Error:
            pooled.invalidate()
            pooled.close()
            return None
        pooled.detach()  # now closed, not checked in, by close()
        self._own = pooled
        return connection

    def close(self) -> None:
        """Close the middleware's own connection (a new one is taken when next needed)."""
        own, self._own = self._own, None
        if own is not None:
            with contextlib.suppress(Exception):  # already gone: nothing to close
                own.close()

    def _checked_calls(
        self, cursor: psycopg.Cursor[Any], waiting: list[_Waiting], settings: Any
    ) -> list[tuple[int, tuple[_Call, _Keys]]]:
        """The calls to burn, with their place in `waiting`: each checked (reading key material
        not kept yet), and each nonce once (a repeat is the route's, after the first is burned)."""
        checked = []
        nonces = set()
        for at, one in enumerate(waiting):
            call, keys = one.call, one.keys
            if keys is None:
                keys = self._keys.get(call.device_id) or self._read_keys(cursor, call.device_id)
                if keys is None or not _checked(call, keys, settings, one.now):
                    continue
            if (call.device_id, call.nonce) in nonces:
                continue
            nonces.add((call.device_id, call.nonce))
            checked.append((at, (call, keys)))
        return checked

    def _prepare(self, engine: Engine) -> None:
        statement = _open_asks(bindparam("device_id"))
        names = tuple(column.name for column in statement.selected_columns)
        assert names == _ASK_COLUMNS, names
        open_asks = _compile(statement, engine.dialect)
        self._poll_statement = _Compiled(
            _POLL_SQL.format(open_asks=open_asks.sql.replace("\n", "\n    ")), open_asks.params
        )
        for_each = _compile(_open_asks(literal_column("polled.device_id")), engine.dialect)
        self._batch_statements = {
            rows: _Compiled(
                _BATCH_SQL.format(
                    calls=",\n           ".join(_BATCH_CALL.format(at=at) for at in range(rows)),
                    open_asks=for_each.sql.replace("\n", "\n        "),
                ),
                for_each.params,
            )
            for rows in (2, 4, 8, 16)
        }
        if self._engine is not None:
            self.close()  # the old engine's
        # Disposing of the engine (the app's end, a test's) closes this connection too.
        event.listen(engine, "engine_disposed", lambda _engine: self.close())
        self._engine = engine
        self._keys.clear()
        self._ask_json.clear()

    def _read_keys(self, cursor: psycopg.Cursor[Any], device_id: int) -> _Keys | None:
        """Read and keep the key material of the block of ids `device_id` is in."""
        cursor.execute(
            _KEYS_SQL, {"first": device_id - device_id % _KEY_BLOCK, "count": _KEY_BLOCK}
        )
        rows = cursor.fetchall()
        if len(self._keys) + len(rows) > _KEY_CACHE_SIZE:
            self._keys.clear()
        for id_, public_key, credential_hash in rows:
            self._keys[id_] = _Keys(bytes(public_key), credential_hash)
        return self._keys.get(device_id)

    def _poll(
        self, cursor: psycopg.Cursor[Any], calls: list[tuple[_Call, _Keys]], now: datetime
    ) -> list[list[Sequence[Any]] | None]:
        """Burn the calls' nonces and read their open asks: for each call its asks' rows, or
        None if its nonce was not burned. One statement for one call, one per _BATCH calls."""
        if len(calls) == 1:
            return [self._poll_one(cursor, *calls[0], now)]
        found: list[list[Sequence[Any]] | None] = []
        for first in range(0, len(calls), _BATCH):
            found += self._poll_batch(cursor, calls[first : first + _BATCH], now)
        return found

    def _poll_one(
        self, cursor: psycopg.Cursor[Any], call: _Call, keys: _Keys, now: datetime
    ) -> list[Sequence[Any]] | None:
        statement = self._poll_statement
        assert statement is not None
        cursor.execute(
            statement.sql,
            {
                **statement.params,
                "device_id": call.device_id,
                "nonce": call.nonce,
                "now": now,
                "seen_before": now - devices.LAST_SEEN_RESOLUTION,
                "public_key": keys.public_key,
                "credential_hash": keys.credential_hash,
            },
        )
        rows = cursor.fetchall()
        if not rows:
            return None  # replayed, revoked, unknown, a first delivery, ...: the route's
        if rows[0][0] is None:
            return []  # no open asks (the LEFT JOIN's one row)
        return rows

    def _poll_batch(
        self, cursor: psycopg.Cursor[Any], calls: list[tuple[_Call, _Keys]], now: datetime
    ) -> list[list[Sequence[Any]] | None]:
        size = next(rows for rows in sorted(self._batch_statements) if rows >= len(calls))
        statement = self._batch_statements[size]
        params = {
            **statement.params,
            "now": now,
            "seen_before": now - devices.LAST_SEEN_RESOLUTION,
        }
        for at in range(size):
            call, keys = calls[at] if at < len(calls) else (None, None)
            params[f"device_id_{at}"] = call.device_id if call else None
            params[f"nonce_{at}"] = call.nonce if call else None
            params[f"public_key_{at}"] = keys.public_key if keys else None
            params[f"credential_hash_{at}"] = keys.credential_hash if keys else None
        cursor.execute(statement.sql, params)
        found: list[list[Sequence[Any]] | None] = [None] * len(calls)
        for at, _, *row in cursor.fetchall():
            rows = found[at]
            if rows is None:
                rows = found[at] = []
            if row[0] is not None:  # else no open asks (the LEFT JOIN's one row)
                rows.append(row)
        return found

    def _json(self, row: Sequence[Any]) -> bytes:
        key = (*row[:-2], *(row[-2] or ()))
        cached = self._ask_json.get(key)
        if cached is None:
            if len(self._ask_json) >= _ASK_CACHE_SIZE:
                self._ask_json.clear()
            cached = asks.device_ask_json(_ask_row(row), tuple(row[-2] or ()))
            self._ask_json[key] = cached
        return cached


def _checked(call: _Call, keys: _Keys, settings: Any, now: datetime) -> bool:
    """The credential, the signature and the clock, checked as `devices.check_call` checks them."""
    if not hmac.compare_digest(keys.credential_hash, tokens.digest(call.credential)):
        return False
    message = device_signing_message("GET", POLL_PATH, call.stamp, call.nonce)
    try:
        devices.verifier(keys.public_key).verify(call.signature, message)
    except InvalidSignature:
        return False
    sent_at = datetime.fromtimestamp(int(call.stamp), UTC)
    return abs(sent_at - now) <= timedelta(seconds=settings.device_clock_skew_seconds)


# The columns of a row of _open_asks (checked in _prepare): delivered_at is the fourth.
_ASK_COLUMNS = (
    *("id", "state", "deadline", "delivered_at", "receipt", "request_id"),
    *_AskRow._fields[5:],
    "uploaded",
    "created_at",
)
_TIMES = {_AskRow._fields.index(name) for name in ("deadline", "window_start", "window_end")}


def _ask_row(row: Sequence[Any]) -> _AskRow:
    values = [value for at, value in enumerate(row[:-2]) if at != 3]  # not delivered_at
    for at in _TIMES:
        # The driver gives the session's time zone; the ORM types give UTC.
        values[at] = values[at].astimezone(UTC)
    return _AskRow(*values)
