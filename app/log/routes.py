"""HTTP for the verifiable log.

Public, no login (hashes, signatures and quarterly counts only; the contract of
porchlight/audit_cli.py):
- `GET /log/checkpoint`: the latest signed checkpoint, cosignatures appended (text/plain).
- `GET /log/tile/<L>/<N>[.p/<W>]`: c2sp.org/tlog-tiles hash tiles; full tiles are immutable
  and cacheable for a year; 404 for a tile the log does not have.
- `GET /log/proof/inclusion?index=I[&size=S]`, `GET /log/proof/consistency?from=A[&to=B]`:
  RFC 9162 proofs as JSON (hashes in standard base64; S/B default to the latest checkpoint).
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

import base64
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from sqlalchemy import Engine

from app.accounts.models import User
from app.deps import NowDep, SessionDep, make_router, require
from app.errors import InvalidInput, NotFound
from app.log import auditors, checkpoints, reports, tree
from app.log.keys import LogSigner
from app.log.models import LogCheckpoint
from porchlight.tlog.tiles import TILE_WIDTH, Tile, TileError, parse_tile_path

log_router = make_router(prefix="/log", tags=["log"])
api_router = make_router(prefix="/api", tags=["log"])

_IMMUTABLE = "public, max-age=31536000, immutable"
# A partial tile of a given width never changes either, but it is superseded soon.
_PARTIAL = "public, max-age=60"
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


def _tile_response(data: bytes | None, tile: Tile, public: bool) -> Response:
    if data is None:
        raise NotFound(f"the log has no {tile.path()} yet")
    cache = _IMMUTABLE if tile.width == TILE_WIDTH else _PARTIAL
    if not public:
        # Entry bundles are for auditors only: no shared cache may keep a copy.
        cache = cache.replace("public", "private")
    return Response(data, media_type="application/octet-stream", headers={"Cache-Control": cache})


def _parse_tile(path: str) -> Tile:
    try:
        return parse_tile_path(path)
    except TileError as error:
        raise NotFound(str(error)) from None


async def _engine(request: Request) -> Engine:
    # async: FastAPI runs a plain `def` dependency in the thread pool, a hop per request.
    return request.app.state.engine  # type: ignore[no-any-return]


# Tiles and bundles are read outside the request's session, each with one statement of its
# own (app.log.tree.hash_tile explains why): a full verification reads every one of them.
EngineDep = Annotated[Engine, Depends(_engine)]


# Declared before the hash-tile route so that `entries/...` never reaches the public one.
@log_router.get("/tile/entries/{path:path}", response_class=Response)
def get_entry_bundle(
    _: Annotated[User, Depends(require("log:read"))],
    path: str,
    session: SessionDep,
    engine: EngineDep,
) -> Response:
    """An entry bundle (c2sp.org/tlog-tiles): every entry's bytes, so auditors only."""
    tile = _parse_tile(f"tile/entries/{path}")
    if engine.dialect.name == "sqlite":
        # Signing in only read (the token and its user), but on SQLite that transaction holds
        # the write lock: end it now and read the bundle outside it.
        session.commit()
        return _tile_response(tree.entry_bundle(engine, tile), tile, public=False)
    # Elsewhere in the request's transaction, on the connection signing in already used.
    return _tile_response(tree.entry_bundle(session.connection(), tile), tile, public=False)


def get_tile(path: str, engine: EngineDep) -> Response:
    """A hash tile (c2sp.org/tlog-tiles): hashes only, public."""
    tile = _parse_tile(f"tile/{path}")
    if tile.level is None:
        # Unreachable while the entries route is declared first; never serve bundles here.
        raise NotFound("entry bundles are served at /log/tile/entries/ to auditors only")
    return _tile_response(tree.hash_tile(engine, tile), tile, public=True)


# A plain route, not the transaction route of every other endpoint: a hash tile is one
# SELECT outside any session, so a request session would only cost its commit and close.
log_router.add_api_route(
    "/tile/{path:path}",
    get_tile,
    methods=["GET"],
    response_class=Response,
    route_class_override=APIRoute,
)


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


def _size_or_latest(session: SessionDep, size: int | None) -> int:
    if size is None:
        return _latest(session).size
    if size > tree.committed_size(session):
        raise InvalidInput(f"the log has fewer than {size} entries")
    return size


@log_router.get("/proof/inclusion", response_model=InclusionProofOut)
def get_inclusion_proof(
    session: SessionDep,
    index: Annotated[int, Query(ge=0)],
    size: Annotated[int | None, Query(ge=1)] = None,
) -> InclusionProofOut:
    """RFC 9162 2.1.3 inclusion proof of entry `index` in the tree of `size` entries."""
    tree_size = _size_or_latest(session, size)
    if index >= tree_size:
        raise InvalidInput(f"entry {index} is not in a tree of size {tree_size}")
    leaf, root, proof = tree.inclusion_with_root(session, index, tree_size)
    return InclusionProofOut(
        index=index,
        size=tree_size,
        leaf_hash=_b64(leaf),
        root_hash=_b64(root),
        proof=[_b64(node) for node in proof],
    )


@log_router.get(
    "/proof/consistency", response_model=ConsistencyProofOut, response_model_by_alias=True
)
def get_consistency_proof(
    session: SessionDep,
    size1: Annotated[int, Query(alias="from", ge=1)],
    size2: Annotated[int | None, Query(alias="to", ge=1)] = None,
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
    start: Annotated[int, Query(ge=0)] = 0,
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
    counts: dict[str, int]


class TransparencyOut(BaseModel):
    generated_at: datetime
    # Which log action each count counts, so anyone can recompute it from the log.
    actions: dict[str, str]
    quarters: list[QuarterOut]


@api_router.get("/transparency", response_model=TransparencyOut)
def get_transparency(session: SessionDep, now: NowDep) -> TransparencyOut:
    """Quarterly counts of requests, reviews, asks, consents, shares, downloads and purges."""
    return TransparencyOut(
        generated_at=now,
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
    key_id: int,
    session: SessionDep,
    now: NowDep,
) -> AuditorKeyOut:
    """Stop accepting cosignatures by one of your keys."""
    return _key_out(auditors.revoke_key(session, user, key_id, now))
