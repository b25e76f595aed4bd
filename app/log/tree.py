"""The Merkle tree over the log (RFC 9162 section 2.1), stored as complete-subtree hashes.

Node (level, index) is the hash of leaves [index * 2**level, (index + 1) * 2**level), one row
of `log_tree_nodes` each, leaves included (see app.log.models for why nodes rather than stored
tiles). `store_leaves` runs inside `app.audit.integrator.integrate`, under the log head's
lock and in the transaction that gives the entries their indexes, so the nodes always describe
exactly the integrated entries. Everything else here only reads: roots, proofs, c2sp tlog-tiles
hash tiles and entry bundles, each from O(log n) rows or one contiguous range.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, insert, or_, select, tuple_
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from app.audit.models import LogEntry, LogHead
from app.log.models import LogTreeNode
from porchlight.tlog.merkle import (
    NodeReader,
    append_leaves,
    complete_levels,
    consistency_proof,
    inclusion_proof,
    subtree_nodes,
    tree_root,
)
from porchlight.tlog.tiles import TILE_HEIGHT, TILE_WIDTH, Tile, encode_bundle, level_width

# Rows per INSERT when loading many nodes at once (well under every driver's parameter limit).
_CHUNK = 5000


class MissingNodes(LookupError):
    """Stored hashes the tree needs are absent: the database is damaged or was edited."""


def node_reader(session: Session) -> NodeReader:
    """A `porchlight.tlog.merkle.NodeReader` over the stored tree (one query per call)."""

    def read(nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        if not nodes:
            return []
        columns = (LogTreeNode.level, LogTreeNode.index, LogTreeNode.hash)
        if session.get_bind().dialect.name == "sqlite":
            # SQLite answers a row-value IN with a full table scan; an OR of
            # (level = L AND index IN (...)) is one primary-key search per node.
            by_level: dict[int, list[int]] = {}
            for level, index in nodes:
                by_level.setdefault(level, []).append(index)
            condition = or_(
                *(
                    and_(LogTreeNode.level == level, LogTreeNode.index.in_(indexes))
                    for level, indexes in by_level.items()
                )
            )
        else:
            # PostgreSQL plans a row-value IN in a fraction of the time of a long OR.
            condition = tuple_(LogTreeNode.level, LogTreeNode.index).in_(list(nodes))
        rows = session.execute(select(*columns).where(condition))
        found = {(level, index): bytes(value) for level, index, value in rows}
        missing = [node for node in nodes if node not in found]
        if missing:
            raise MissingNodes(f"stored tree is missing node(s) {missing[:5]}")
        return [found[node] for node in nodes]

    return read


def store_leaves(session: Session, start: int, leaf_hashes: Sequence[bytes]) -> None:
    """Store leaves start, start+1, ... and the inner nodes they complete.

    Reads at most one older node per level (the left siblings), inserts on average two rows
    per leaf. Must run under the log head's lock, in the transaction that indexes the entries.
    """
    created = append_leaves(start, leaf_hashes, node_reader(session))
    rows = [{"level": level, "index": index, "hash": value} for level, index, value in created]
    _insert_nodes(session, rows)


def store_all_levels(session: Session, leaf_hashes: Sequence[bytes]) -> None:
    """Insert every node of the tree over `leaf_hashes` (into an empty node table, leaves
    0..n-1). For loading a large log in bulk; the same hashing as appends."""
    rows = [
        {"level": level, "index": index, "hash": value}
        for level, hashes in enumerate(complete_levels(list(leaf_hashes)))
        for index, value in enumerate(hashes)
    ]
    _insert_nodes(session, rows)


def _insert_nodes(session: Session, rows: list[dict[str, object]]) -> None:
    # Core insert on the session's connection: one executemany, no ORM bookkeeping per row.
    connection = session.connection()
    for offset in range(0, len(rows), _CHUNK):
        connection.execute(insert(LogTreeNode), rows[offset : offset + _CHUNK])


def committed_size(session: Session) -> int:
    """The tree size this transaction sees: integrated entries (pending ones have no index)."""
    return session.execute(select(LogHead.size).where(LogHead.id == 1)).scalar_one()


def root_hash(session: Session, size: int) -> bytes:
    """MTH of the first `size` entries, from at most log2(size) stored nodes."""
    return tree_root(size, node_reader(session))


def inclusion(session: Session, index: int, size: int) -> list[bytes]:
    """RFC 9162 2.1.3.1 inclusion proof of entry `index` in the tree of `size` entries."""
    return inclusion_proof(index, size, node_reader(session))


def inclusion_with_root(
    session: Session, index: int, size: int
) -> tuple[bytes, bytes, list[bytes]]:
    """(leaf hash, root, inclusion proof) of entry `index` in the tree of `size`, from ONE
    query: the proof's nodes, the root's nodes and the leaf are read together."""
    read = node_reader(session)
    extra = [*subtree_nodes(0, size), (0, index)]
    cache: dict[tuple[int, int], bytes] = {}

    def cached(nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        missing = [node for node in nodes if node not in cache]
        if missing:
            wanted = list(dict.fromkeys([*missing, *(n for n in extra if n not in cache)]))
            cache.update(zip(wanted, read(wanted), strict=True))
        return [cache[node] for node in nodes]

    proof = inclusion_proof(index, size, cached)
    return cached([(0, index)])[0], tree_root(size, cached), proof


def consistency(session: Session, size1: int, size2: int) -> list[bytes]:
    """RFC 9162 2.1.4.1 consistency proof from size1 to size2 (0 < size1 <= size2)."""
    return consistency_proof(size1, size2, node_reader(session))


# Tiles and bundles are read with ONE statement each: the log size (does the tile exist yet?)
# and the tile's rows together (the outer join still yields the size when the range has no
# rows), in one snapshot. A full verification reads every tile and bundle of the log,
# thousands of requests, so per-request cost matters (docs/benchmarks.md).
_HASH_TILE = (
    select(LogHead.size, LogTreeNode.hash)
    .select_from(LogHead)
    .outerjoin(
        LogTreeNode,
        and_(
            LogTreeNode.level == bindparam("level"),
            LogTreeNode.index >= bindparam("first"),
            LogTreeNode.index < bindparam("end"),
        ),
    )
    .where(LogHead.id == 1)
    .order_by(LogTreeNode.index)
)
_ENTRY_BUNDLE = (
    select(LogHead.size, LogEntry.entry)
    .select_from(LogHead)
    .outerjoin(
        LogEntry,
        and_(LogEntry.index >= bindparam("first"), LogEntry.index < bindparam("end")),
    )
    .where(LogHead.id == 1)
    .order_by(LogEntry.index)
)
_COMPILED: dict[tuple[str, int], SQLCompiler] = {}


def _read_rows(engine: Engine, statement: ClauseElement, params: dict[str, int]) -> list[Any]:
    """Run one read-only SELECT on a pooled DBAPI connection of its own, outside any session.

    Why not a session: on SQLite every SQLAlchemy transaction begins IMMEDIATE (app.db), taking
    the database's write lock, so concurrent tile reads would queue behind each other and
    behind appends, each waiting in SQLite's sleeping busy handler. One SELECT in autocommit
    mode is already a consistent snapshot and takes no write lock (WAL). On PostgreSQL it is
    one statement in a transaction the pool rolls back. The statement is compiled once.
    """
    key = (engine.dialect.name, id(statement))
    if key not in _COMPILED:
        compiled = statement.compile(dialect=engine.dialect)
        assert isinstance(compiled, SQLCompiler)
        _COMPILED[key] = compiled
    compiled = _COMPILED[key]
    values = compiled.construct_params(params)
    positions = compiled.positiontup
    arguments: Any = [values[name] for name in positions] if positions else values
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            cursor.execute(compiled.string, arguments)
            return list(cursor.fetchall())
        finally:
            cursor.close()
    finally:
        connection.close()


def hash_tile(engine: Engine, tile: Tile) -> bytes | None:
    """A tlog-tiles hash tile of the current tree, or None if it has no such tile (yet).

    A tile at level L holds the nodes at tree level 8L; any width up to what the tree has is
    served, so a client holding an older checkpoint still gets the partial tile it names.
    Level-0 tiles come from the node table, not from `log_entries`: the tree records what was
    integrated, so an entry edited afterwards disagrees with its tile and auditors name it.
    Served as stored, on every request (nothing cached), even if rows are missing: judging
    them is the auditor's job.
    """
    assert tile.level is not None
    first = tile.index * TILE_WIDTH
    params = {"level": TILE_HEIGHT * tile.level, "first": first, "end": first + tile.width}
    rows = _read_rows(engine, _HASH_TILE, params)
    if first + tile.width > level_width(rows[0][0], tile.level):
        return None
    return b"".join([bytes(value) for _, value in rows if value is not None])


def entry_bundle(source: Engine | Connection, tile: Tile) -> bytes | None:
    """A tlog-tiles entry bundle of the current log, or None if it has no such bundle (yet).

    Read on its own connection from the engine (see `_read_rows`), or in the transaction of
    the given connection. Served from the rows as they are, on every request (nothing
    cached): if the table was edited, auditors see the edit.
    """
    first = tile.index * TILE_WIDTH
    params = {"first": first, "end": first + tile.width}
    if isinstance(source, Connection):
        rows = list(source.execute(_ENTRY_BUNDLE, params).all())
    else:
        rows = _read_rows(source, _ENTRY_BUNDLE, params)
    if first + tile.width > rows[0][0]:
        return None
    return encode_bundle([bytes(entry) for _, entry in rows if entry is not None])
