"""The steady device poll (`GET /api/device/asks`) answered before FastAPI routing, on PostgreSQL.

Every camera polls every few seconds, so this is the busiest call in the system, and nearly
every poll is the same: an authenticated device whose asks have all been delivered before.
For that poll, FastAPI's middleware, routing and request machinery, a worker-thread hop and
SQLAlchemy's session and statement machinery cost several times the database work. This ASGI
middleware answers it with two statements on a pooled connection in autocommit mode, run on
the event loop (each an index lookup on a local database; the second may wait for a row lock
at most 20 ms; with no idle pooled connection the route answers, rather than the loop waiting
for one):

1. read the device's key, credential hash, revocation and last_seen_at, and its open asks
   with everything a device is shown (one round trip; writes nothing);
2. after the credential, the signature and the clock are checked exactly as
   `app.devices.service.check_call` checks them: burn the nonce and, at most once a minute,
   refresh last_seen_at, in one statement (one atomic implicit transaction), committed
   without waiting for the disk (`devices.make_durable` says why a poll that changes nothing
   else may).

Only that success is answered here. Anything else goes on, untouched, to the route in
app/requests/device_routes.py, which answers it as it always has, in one transaction: a
refusal of any kind (nothing is burned here before every check has passed, so the route sees
the call exactly as sent; a replay reaches it after statement 2 found the nonce used), a first
delivery (logged `ask:deliver` with a durable commit), a query string or a body, SQLite, and
any database error (the connection is dropped). The route also documents the call in the
OpenAPI schema. The body is built by the route's own builder (`asks.device_ask_json`), byte
for byte; an ask's JSON depends only on its row, so it is kept per row and rebuilt when any
column changes.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple, cast

import psycopg
from cryptography.exceptions import InvalidSignature
from sqlalchemy import Engine, Select, Table, bindparam, select
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import QueuePool
from starlette.types import ASGIApp, Receive, Scope, Send

from app import tokens
from app.devices import service as devices
from app.devices.models import Device, DeviceNonce
from app.requests import asks
from app.requests.models import Ask
from porchlight.client import device_signing_message

POLL_PATH = "/api/device/asks"
# Asks' JSON kept per worker (a few KiB each with its row): one open ask each for 16,384
# devices; past that it starts again empty.
_ASK_CACHE_SIZE = 16384

_DEVICES = cast(Table, Device.__table__)
_NONCES = cast(Table, DeviceNonce.__table__)
_ASKS = cast(Table, Ask.__table__)


class _Compiled(NamedTuple):
    sql: str
    params: dict[str, Any]  # the literals SQLAlchemy made bind parameters of


def _compile(statement: Any, dialect: Dialect) -> _Compiled:
    compiled = statement.compile(dialect=dialect)
    return _Compiled(str(compiled), dict(compiled.params))


def _caller_and_asks() -> Select[Any]:
    """The device and its open asks, one row per ask (ask columns NULL when it has none)."""
    d = _DEVICES.c
    # A plain outer join on the route's conditions: PostgreSQL's generic plan for it is as
    # cheap as for the route's query, so the prepared statement is not planned per call.
    return (
        select(d.public_key, d.credential_hash, d.revoked_at, d.last_seen_at)
        .add_columns(*asks.device_ask_columns(), _ASKS.c.created_at.label("created_at"))
        .select_from(_DEVICES.outerjoin(asks.device_ask_joins(), asks.open_asks_of(d.id)))
        .where(d.id == bindparam("device_id"))
        .order_by(_ASKS.c.created_at, _ASKS.c.id)
    )


# Burn the nonce and, when asked, touch last_seen_at; returns one row iff the nonce was new.
# Data-modifying WITH queries run to completion whether or not the SELECT reads them. The
# settings are local to this statement's implicit transaction; lock_timeout is set by the
# row the INSERT reads, so before any lock wait. A lock wait longer than 20 ms (a concurrent
# call carrying the same nonce, or a transaction holding the device's row, e.g. a revocation
# waiting for the log) stops the statement: the event loop must not wait on it, so the route
# then answers the call on a worker thread.
_BURN_SQL = """
WITH burned AS (
    INSERT INTO device_nonces (device_id, nonce, seen_at)
    SELECT %(device_id)s, %(nonce)s, %(now)s
    FROM (SELECT set_config('lock_timeout', '20ms', true),
                 set_config('synchronous_commit', 'off', true)) AS settings
    ON CONFLICT DO NOTHING
    RETURNING device_id
), touched AS (
    UPDATE devices SET last_seen_at = %(now)s
    WHERE %(touch)s AND id IN (SELECT device_id FROM burned)
)
SELECT device_id FROM burned
"""

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


class DevicePolls:
    """ASGI middleware: the steady signed poll, answered before routing (module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._engine: Engine | None = None
        self._caller: _Compiled | None = None
        self._clips: _Compiled | None = None
        self._ask_json: dict[tuple[Any, ...], bytes] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and scope["path"] == POLL_PATH:
            call = _parse(scope)
            body = self._answer(scope["app"].state, call) if call is not None else None
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

    def _answer(self, state: Any, call: _Call) -> bytes | None:
        """The poll's body if it is a steady success (nonce burned); None: leave it to the route."""
        engine: Engine = state.engine
        if engine.dialect.name != "postgresql":
            return None
        if self._engine is not engine:
            self._prepare(engine)
        pool = engine.pool
        if isinstance(pool, QueuePool) and pool.checkedin() == 0:
            # No idle connection: taking one could mean waiting for a worker thread to return
            # one, or connecting, on the event loop; the route waits on a worker thread instead.
            return None
        now: datetime = state.clock()
        try:
            pooled = engine.raw_connection()
        except DBAPIError:
            return None  # cannot connect: the route says so as every route does
        connection = cast(psycopg.Connection[Any], pooled.driver_connection)
        try:
            connection.autocommit = True
            try:
                body = self._poll(connection, state.settings.device_clock_skew_seconds, call, now)
            finally:
                connection.autocommit = False
        except psycopg.Error:
            # A lock timeout, a lost server, anything: this connection is not reused, and the
            # route answers (it recovers from a lost server as every route does).
            pooled.invalidate()
            return None
        finally:
            pooled.close()
        return body

    def _prepare(self, engine: Engine) -> None:
        statement = _caller_and_asks()
        names = tuple(column.name for column in statement.selected_columns)
        assert names[4:] == _ASK_COLUMNS, names
        self._caller = _compile(statement, engine.dialect)
        self._clips = _compile(asks.UPLOADED_CLIPS, engine.dialect)
        self._engine = engine
        self._ask_json.clear()

    def _poll(
        self, connection: psycopg.Connection[Any], skew: int, call: _Call, now: datetime
    ) -> bytes | None:
        assert self._caller is not None
        with connection.cursor() as cursor:
            cursor.execute(self._caller.sql, {**self._caller.params, "device_id": call.device_id})
            rows = cursor.fetchall()
            if not rows:
                return None
            public_key, credential_hash, revoked_at, last_seen_at = rows[0][:4]
            if revoked_at is not None or not hmac.compare_digest(
                credential_hash, tokens.digest(call.credential)
            ):
                return None
            message = device_signing_message("GET", POLL_PATH, call.stamp, call.nonce)
            try:
                devices.verifier(bytes(public_key)).verify(call.signature, message)
            except InvalidSignature:
                return None
            sent_at = datetime.fromtimestamp(int(call.stamp), UTC)
            if abs(sent_at - now) > timedelta(seconds=skew):
                return None
            ask_rows = [row[4:] for row in rows if row[4] is not None]
            # delivered_at is the ask row's fourth column: a first delivery is logged by the route.
            if any(row[3] is None for row in ask_rows):
                return None
            # Every read comes before the write: once the nonce is burned, nothing may fail.
            parts = [(row, self._uploaded(cursor, row)) for row in ask_rows]
            touch = last_seen_at is None or now - last_seen_at >= devices.LAST_SEEN_RESOLUTION
            cursor.execute(
                _BURN_SQL,
                {"device_id": call.device_id, "nonce": call.nonce, "now": now, "touch": touch},
            )
            if cursor.fetchone() is None:
                return None  # replayed: the route refuses it
        return b"[" + b",".join(self._json(row, uploaded) for row, uploaded in parts) + b"]"

    def _uploaded(self, cursor: psycopg.Cursor[Any], row: Sequence[Any]) -> tuple[str, ...]:
        # As asks.uploaded_clip_ids: only a consented ask has clips (a pending one, every
        # steady poll's case, needs no query).
        if row[1] != "consented":
            return ()
        assert self._clips is not None
        cursor.execute(self._clips.sql, {**self._clips.params, "ask_id": row[0]})
        return tuple(clip_id for (clip_id,) in cursor.fetchall())

    def _json(self, row: Sequence[Any], uploaded: tuple[str, ...]) -> bytes:
        key = (*row, uploaded)
        cached = self._ask_json.get(key)
        if cached is None:
            if len(self._ask_json) >= _ASK_CACHE_SIZE:
                self._ask_json.clear()
            cached = asks.device_ask_json(_ask_row(row), uploaded)
            self._ask_json[key] = cached
        return cached


# The asks part of a row of _caller_and_asks, column by column (checked in _prepare).
_ASK_COLUMNS = (
    *("id", "state", "deadline", "delivered_at", "receipt", "request_id"),
    *_AskRow._fields[5:],
    "created_at",
)
_TIMES = {_AskRow._fields.index(name) for name in ("deadline", "window_start", "window_end")}


def _ask_row(row: Sequence[Any]) -> _AskRow:
    values = [value for at, value in enumerate(row[:-1]) if at != 3]  # not delivered_at
    for at in _TIMES:
        # The driver gives the session's time zone; the ORM types give UTC.
        values[at] = values[at].astimezone(UTC)
    return _AskRow(*values)
