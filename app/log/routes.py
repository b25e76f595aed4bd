"""HTTP for the verifiable log.

Public, no login (hashes, signatures and quarterly counts only; the contract of
porchlight/audit_cli.py):
- `GET /log/checkpoint`: the latest signed checkpoint, cosignatures appended (text/plain).
- `GET /log/tile/<L>/<N>[.p/<W>]`: c2sp.org/tlog-tiles hash tiles, full or partial, immutable
  and cacheable for a year; 404 for a tile the latest checkpoint does not cover.
- `GET /log/proof/inclusion?index=I[&size=S]`, `GET /log/proof/consistency?from=A[&to=B]`:
  RFC 9162 proofs as JSON (hashes in standard base64; S/B default to the latest checkpoint,
  and a larger one is refused, 422).
Nothing public, and no entry bundle either, reaches past the latest published checkpoint:
the integrated size moves with every entry, so serving it would let a requester count the
asks and declines of their own request (DESIGN promise 3; app.log.checkpoints pads sizes).
- `POST /log/cosignatures`: `{"checkpoint": <note>, "cosignature": <one signature line>}`.
- `GET /api/log/public`: the cosigned checkpoint and the log's verifier key, as JSON.
- `GET /api/transparency`: the quarterly transparency report, as JSON.
Signed in:
- `GET /log/tile/entries/<N>[.p/<W>]` (log:read): c2sp.org/tlog-tiles entry bundles. They hold
  every entry's bytes (ask:decline, ask:consent, request:open with its asks...), from which a
  requester could count who was asked and who declined for their own request (DESIGN promise
  3), so only auditors read them; a privately cached copy, never a shared one.
- `GET /api/log/entries?start=&limit=&subject=` (log:read): entries with parsed fields.
- `POST /api/log/auditor-keys`, `GET /api/log/auditor-keys`,
  `POST /api/log/auditor-keys/{key_id}/revoke` (log:cosign): an auditor's cosigner keys.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import parse_qs

from fastapi import Depends, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from app.accounts import service as accounts
from app.accounts.models import User
from app.db import MAX_LOG_INDEX
from app.deps import SESSION_COOKIE, NowDep, RowId, SessionDep, make_router, require
from app.errors import AppError, InvalidInput, NotAuthenticated, NotFound, NotPermitted
from app.log import auditors, checkpoints, reports, tree
from app.log.keys import LogSigner
from app.log.models import LogCheckpoint
from app.permissions import has_permission
from porchlight.tlog.tiles import Tile, TileError, parse_tile_path

_T = TypeVar("_T")
log_router = make_router(prefix="/log", tags=["log"])
api_router = make_router(prefix="/api", tags=["log"])

# c2sp.org/tlog-tiles: tiles and entry bundles are immutable, "so [their] caching headers
# SHOULD be long-lived". A partial one too: its width is in its path and the log only appends,
# so `<N>.p/<W>` holds the same bytes for ever (a wider one has another path). Only the
# checkpoint changes.
_IMMUTABLE = "public, max-age=31536000, immutable"
_FRESH = "no-cache"


def _signer(request: Request) -> LogSigner:
    return request.app.state.log_signer  # type: ignore[no-any-return]


SignerDep = Annotated[LogSigner, Depends(_signer)]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _latest(session: SessionDep) -> LogCheckpoint:
    row = checkpoints.latest(session)
    if row is None:
        raise NotFound("no checkpoint has been published yet")
    return row


@log_router.get("/checkpoint", response_class=Response)
def get_checkpoint(session: SessionDep) -> Response:
    """The latest signed checkpoint with every auditor cosignature appended."""
    text = checkpoints.served_text(session, _latest(session))
    return Response(text, media_type="text/plain; charset=utf-8", headers={"Cache-Control": _FRESH})


def _cache_control(public: bool) -> str:
    # Entry bundles are for auditors only: no shared cache may keep a copy.
    return _IMMUTABLE if public else _IMMUTABLE.replace("public", "private")


def _tile_response(data: bytes | None, tile: Tile, public: bool) -> Response:
    if data is None:
        raise NotFound(f"the log has no {tile.path()} yet")
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Cache-Control": _cache_control(public)},
    )


def _parse_tile(path: str) -> Tile:
    try:
        return parse_tile_path(path)
    except TileError as error:
        raise NotFound(str(error)) from None


# Tiles, bundles and inclusion proofs are served on plain routes (not the transaction route of
# every other endpoint) by async endpoints that do their reading in ONE worker-thread hop,
# on one pooled connection outside any session (app.log.tree.RawReads): a full verification
# reads thousands of bundles and tiles, and per request a session, its commit and close, and
# a thread hop per sync dependency cost more than the reading (docs/benchmarks.md).


# The reads below run on a few threads of their own rather than AnyIO's pool of 40: fewer
# than the engine's connection pool holds (SQLAlchemy's default, 5), so a burst of reads
# (a verifier's parallel requests) queues for a thread instead of opening overflow
# connections only to close them again (on PostgreSQL each is a new backend process), and a
# plain executor is a cheaper hand-off than AnyIO's limiter and cancel scope.
_READ_THREADS = 4
_readers = ThreadPoolExecutor(max_workers=_READ_THREADS, thread_name_prefix="log-read")


async def _on_reader(function: Callable[..., _T], *arguments: Any) -> _T:
    return await asyncio.get_running_loop().run_in_executor(_readers, function, *arguments)


def _auditor_bundle(state: Any, authorization: str, cookie: str | None, tile: Tile) -> bytes | None:
    """The bundle, if the caller may read the log's entries (401/403 otherwise).

    The same checks and answers as `require("log:read")`: an API token is checked with one
    statement on the connection the bundle is then read on (nothing about tokens is cached,
    so a revoked token is refused at its next request); a web session cookie the usual way.
    """
    engine: Engine = state.engine
    with tree.RawReads(engine) as reads:
        if authorization:
            scheme, _, secret = authorization.partition(" ")
            if scheme.lower() != "bearer" or not secret:
                raise NotAuthenticated("Authorization must be 'Bearer <API token>'")
            rows = reads.rows(
                accounts.LIVE_API_TOKEN_ROLE, accounts.api_token_params(secret.strip())
            )
            if not rows:
                raise NotAuthenticated("API token not recognised or revoked")
            role: str = rows[0][0]
        else:
            role = _cookie_role(state, cookie)
        if not has_permission(role, _READ_ENTRIES):
            raise NotPermitted(f"your role may not do this ({_READ_ENTRIES})")
        return tree.entry_bundle(reads, tile)


def _cookie_role(state: Any, cookie: str | None) -> str:
    if cookie:
        session: Session
        # Only reads; closing the session ends its transaction (on SQLite, the write lock).
        with state.sessionmaker() as session:
            web_session = accounts.session_for_token(session, cookie, state.clock())
            user = session.get(User, web_session.user_id) if web_session is not None else None
            if user is not None and user.disabled_at is None:
                return user.role
    raise NotAuthenticated("not signed in")


_READ_ENTRIES = "log:read"


# Declared before the hash-tile route so that `entries/...` never reaches the public one.
async def get_entry_bundle(request: Request, path: str) -> Response:
    """An entry bundle (c2sp.org/tlog-tiles): every entry's bytes, so auditors only."""
    tile = _parse_tile(f"tile/entries/{path}")
    data = await _on_reader(
        _auditor_bundle,
        request.app.state,
        request.headers.get("authorization", ""),
        request.cookies.get(SESSION_COOKIE),
        tile,
    )
    return _tile_response(data, tile, public=False)


async def get_tile(request: Request, path: str) -> Response:
    """A hash tile (c2sp.org/tlog-tiles): hashes only, public."""
    tile = _parse_tile(f"tile/{path}")
    if tile.level is None:
        # Unreachable while the entries route is declared first; never serve bundles here.
        raise NotFound("entry bundles are served at /log/tile/entries/ to auditors only")
    data = await _on_reader(tree.hash_tile, request.app.state.engine, tile)
    return _tile_response(data, tile, public=True)


for _path, _endpoint in (
    ("/tile/entries/{path:path}", get_entry_bundle),
    ("/tile/{path:path}", get_tile),
):
    log_router.add_api_route(
        _path, _endpoint, methods=["GET"], response_class=Response, route_class_override=APIRoute
    )


class LogReads:
    """ASGI middleware: answers the log's busiest reads before FastAPI routing.

    A full verification makes thousands of entry-bundle reads, and auditors' and devices'
    inclusion proofs are frequent too; for each, FastAPI's routing through every route, its
    request and dependency machinery cost more CPU than the database reads. This serves
    `GET /log/tile/...` (hash tiles, and entry bundles presented with an API token) and
    `GET /log/proof/inclusion?index=I[&size=S]` with the same functions, answers and headers
    as the routes above, in one worker-thread hop. Only successes are answered here: any
    other request, and any error (401, 403, 404, 422, a malformed path or query), goes on to
    the routes, which answer it as always. The app's outer middlewares (security headers)
    still wrap it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path: str = scope["path"]
            answer: tuple[bytes, str, str | None] | None = None
            if path.startswith("/log/tile/"):
                answer = await self._tile(scope, path)
            elif path == "/log/proof/inclusion":
                answer = await self._inclusion(scope)
            if answer is not None:
                body, media_type, cache = answer
                headers = [
                    (b"content-length", str(len(body)).encode("ascii")),
                    (b"content-type", media_type.encode("ascii")),
                ]
                if cache is not None:
                    headers.insert(0, (b"cache-control", cache.encode("ascii")))
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    async def _tile(self, scope: Scope, path: str) -> tuple[bytes, str, str | None] | None:
        try:
            tile = parse_tile_path(path[len("/log/") :])
        except TileError:
            return None
        state = scope["app"].state
        try:
            if tile.level is None:
                authorization = Headers(scope=scope).get("authorization", "")
                if not authorization:
                    return None  # no token (or a web session cookie): the route decides
                data = await _on_reader(_auditor_bundle, state, authorization, None, tile)
            else:
                data = await _on_reader(tree.hash_tile, state.engine, tile)
        except AppError:
            return None
        if data is None:
            return None
        return data, "application/octet-stream", _cache_control(tile.level is not None)

    async def _inclusion(self, scope: Scope) -> tuple[bytes, str, str | None] | None:
        query = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        if not query.keys() <= {"index", "size"} or any(len(v) != 1 for v in query.values()):
            return None
        numbers = {name: values[0] for name, values in query.items()}
        if "index" not in numbers or not all(
            v.isascii() and v.isdigit() and len(v) < 19 for v in numbers.values()
        ):
            return None
        index = int(numbers["index"])
        size = int(numbers["size"]) if "size" in numbers else None
        if size == 0:
            return None
        try:
            body = await _on_reader(_inclusion_json, scope["app"].state.engine, index, size)
        except AppError:
            return None
        return body, "application/json", None


class InclusionProofOut(BaseModel):
    index: int
    size: int
    leaf_hash: str
    root_hash: str
    proof: list[str]


class ConsistencyProofOut(BaseModel):
    size1: int = Field(serialization_alias="from")
    size2: int = Field(serialization_alias="to")
    root1: str
    root2: str
    proof: list[str]


def _beyond_published(size: int, published: int | None) -> InvalidInput:
    return InvalidInput(
        f"the latest published checkpoint has {published or 0} entries: "
        f"nothing is served for a tree of {size} before a checkpoint covers it"
    )


def _size_or_latest(session: SessionDep, size: int | None) -> int:
    # Never beyond the latest checkpoint: the integrated size moves with every entry, and a
    # size anyone could probe between checkpoints would count single events (DESIGN promise 3).
    published = _latest(session).size
    if size is None:
        return published
    if size > published:
        raise _beyond_published(size, published)
    return size


def _inclusion_json(engine: Engine, index: int, size: int | None) -> bytes:
    with tree.RawReads(engine) as reads:
        published, _ = tree.published_and_committed(reads)
        if size is None:
            if published is None:
                raise NotFound("no checkpoint has been published yet")
            size = published
        elif published is None or size > published:
            # As in `_size_or_latest`: proofs stop at the latest checkpoint.
            raise _beyond_published(size, published)
        if index >= size:
            raise InvalidInput(f"entry {index} is not in a tree of size {size}")
        leaf, root, proof = tree.inclusion_with_root(reads, index, size)
    answer = InclusionProofOut(
        index=index,
        size=size,
        leaf_hash=_b64(leaf),
        root_hash=_b64(root),
        proof=[_b64(node) for node in proof],
    )
    return answer.model_dump_json().encode()


async def get_inclusion_proof(
    request: Request,
    index: Annotated[int, Query(ge=0, le=MAX_LOG_INDEX)],
    size: Annotated[int | None, Query(ge=1, le=MAX_LOG_INDEX)] = None,
) -> Response:
    """RFC 9162 2.1.3 inclusion proof of entry `index` in the tree of `size` entries."""
    body = await _on_reader(_inclusion_json, request.app.state.engine, index, size)
    return Response(body, media_type="application/json")


# A plain route like the tiles': the proof is read in one thread hop outside any session.
log_router.add_api_route(
    "/proof/inclusion",
    get_inclusion_proof,
    methods=["GET"],
    response_model=InclusionProofOut,
    route_class_override=APIRoute,
)


@log_router.get(
    "/proof/consistency", response_model=ConsistencyProofOut, response_model_by_alias=True
)
def get_consistency_proof(
    session: SessionDep,
    size1: Annotated[int, Query(alias="from", ge=1, le=MAX_LOG_INDEX)],
    size2: Annotated[int | None, Query(alias="to", ge=1, le=MAX_LOG_INDEX)] = None,
) -> ConsistencyProofOut:
    """RFC 9162 2.1.4 proof that the tree of `from` entries is a prefix of that of `to`."""
    to = _size_or_latest(session, size2)
    if size1 > to:
        raise InvalidInput(f"from ({size1}) is larger than to ({to})")
    return ConsistencyProofOut(
        size1=size1,
        size2=to,
        root1=_b64(tree.root_hash(session, size1)),
        root2=_b64(tree.root_hash(session, to)),
        proof=[_b64(node) for node in tree.consistency(session, size1, to)],
    )


class CosignatureIn(BaseModel):
    checkpoint: str = Field(max_length=4096)
    cosignature: str = Field(max_length=1024)


class CosignatureOut(BaseModel):
    accepted: bool
    name: str
    size: int
    timestamp: int


@log_router.post("/cosignatures", response_model=CosignatureOut, status_code=201)
def post_cosignature(body: CosignatureIn, session: SessionDep, now: NowDep) -> CosignatureOut:
    """Accept an auditor's cosignature of a published checkpoint (no login: it is signed)."""
    stored = auditors.accept_cosignature(session, body.checkpoint, body.cosignature, now)
    checkpoint = session.get(LogCheckpoint, stored.checkpoint_id)
    assert checkpoint is not None
    name = stored.signature_line.split(" ")[1]
    return CosignatureOut(
        accepted=True, name=name, size=checkpoint.size, timestamp=stored.timestamp
    )


class LogEntryOut(BaseModel):
    index: int
    time: str
    actor: str
    action: str
    subject: str
    details: Any
    entry: str  # base64 of the canonical entry bytes
    leaf_hash: str  # hex


class LogPage(BaseModel):
    size: int
    entries: list[LogEntryOut]


@api_router.get("/log/entries", response_model=LogPage)
def list_entries(
    _: Annotated[User, Depends(require("log:read"))],
    session: SessionDep,
    # Entry indexes are signed 64-bit in both databases (SQLite cannot bind a larger int).
    start: Annotated[int, Query(ge=0, le=MAX_LOG_INDEX)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    subject: Annotated[str | None, Query(max_length=100)] = None,
) -> LogPage:
    """Log entries from `start` in index order, optionally only those about `subject`."""
    views = reports.entries(session, start=start, limit=limit, subject=subject)
    return LogPage(
        size=tree.committed_size(session),
        entries=[LogEntryOut(**view.__dict__) for view in views],
    )


class PublicLogOut(BaseModel):
    origin: str
    verifier_key: str
    size: int
    root_hash: str
    published_at: datetime | None
    checkpoint: str
    cosigners: list[str]
    auditor_keys: list[str]


@api_router.get("/log/public", response_model=PublicLogOut)
def get_public_log(session: SessionDep, signer: SignerDep) -> PublicLogOut:
    """The current cosigned checkpoint and the log's verifier key (no login)."""
    public = reports.public_log(session, signer)
    if public is None:
        raise NotFound("no checkpoint has been published yet")
    return PublicLogOut(**public.__dict__)


class QuarterOut(BaseModel):
    quarter: str
    start: datetime
    end: datetime
    # null: withheld, for the reason in `withheld` (reports.MIN_APPROVED_REQUESTS).
    counts: dict[str, int | None]
    withheld: str | None


class TransparencyOut(BaseModel):
    generated_at: datetime
    # Says that the current quarter is missing on purpose (reports.PUBLICATION_NOTE) and when
    # a quarter's ask and clip counts are withheld (reports.WITHHOLDING_NOTE).
    note: str
    # Below this many approved requests, a quarter's ask and clip counts are null.
    min_approved_requests: int
    # Which log action each count counts, so anyone can recompute it from the log.
    actions: dict[str, str]
    quarters: list[QuarterOut]


@api_router.get("/transparency", response_model=TransparencyOut)
def get_transparency(session: SessionDep, now: NowDep) -> TransparencyOut:
    """Quarterly counts of requests, reviews, asks, consents, shares, downloads and purges."""
    return TransparencyOut(
        generated_at=now,
        note=f"{reports.PUBLICATION_NOTE} {reports.WITHHOLDING_NOTE}",
        min_approved_requests=reports.MIN_APPROVED_REQUESTS,
        actions=dict(reports.REPORT_ACTIONS),
        quarters=[QuarterOut(**q.__dict__) for q in reports.transparency_report(session, now)],
    )


class AuditorKeyIn(BaseModel):
    verifier_key: str = Field(max_length=400)


class AuditorKeyOut(BaseModel):
    id: int
    name: str
    verifier_key: str
    created_at: datetime
    revoked_at: datetime | None
    last_cosigned_size: int | None


def _key_out(key: Any) -> AuditorKeyOut:
    return AuditorKeyOut(
        id=key.id,
        name=key.name,
        verifier_key=key.verifier_key,
        created_at=key.created_at,
        revoked_at=key.revoked_at,
        last_cosigned_size=key.last_size,
    )


@api_router.post("/log/auditor-keys", response_model=AuditorKeyOut, status_code=201)
def register_auditor_key(
    user: Annotated[User, Depends(require("log:cosign"))],
    body: AuditorKeyIn,
    session: SessionDep,
    now: NowDep,
) -> AuditorKeyOut:
    """Register your cosigner (witness) verifier key, type 0x04."""
    return _key_out(auditors.register_key(session, user, body.verifier_key, now))


@api_router.get("/log/auditor-keys", response_model=list[AuditorKeyOut])
def list_auditor_keys(
    user: Annotated[User, Depends(require("log:cosign"))], session: SessionDep
) -> list[AuditorKeyOut]:
    """Your registered cosigner keys."""
    return [_key_out(key) for key in auditors.keys_of(session, user)]


@api_router.post("/log/auditor-keys/{key_id}/revoke", response_model=AuditorKeyOut)
def revoke_auditor_key(
    user: Annotated[User, Depends(require("log:cosign"))],
    key_id: RowId,
    session: SessionDep,
    now: NowDep,
) -> AuditorKeyOut:
    """Stop accepting cosignatures by one of your keys."""
    return _key_out(auditors.revoke_key(session, user, key_id, now))
