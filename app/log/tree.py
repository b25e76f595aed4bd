"""The Merkle tree over the log (RFC 9162 section 2.1), stored as complete-subtree hashes.

Node (level, index) is the hash of leaves [index * 2**level, (index + 1) * 2**level), one row
of `log_tree_nodes` each, leaves included (see app.log.models for why nodes rather than stored
tiles). `store_leaves` runs inside `app.audit.integrator.integrate`, under the log head's
lock and in the transaction that gives the entries their indexes, so the nodes always describe
exactly the integrated entries. Everything else here only reads: roots, proofs, c2sp tlog-tiles
hash tiles and entry bundles, each from O(log n) rows or one contiguous range.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Select,
    TextClause,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
)
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from app.audit.models import LogEntry, LogHead
from app.log.models import LogCheckpoint, LogTreeNode
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


# PostgreSQL: the wanted nodes as two arrays joined to the primary key. One statement text
# whatever the nodes (compiled once; psycopg prepares it server-side after a few runs),
# planned as a nested loop of primary-key lookups, where a row-value IN list of ~40 pairs
# is planned afresh on every call.
_NODES_POSTGRESQL = text(
    "SELECT n.level, n.index, n.hash FROM log_tree_nodes AS n"
    " JOIN unnest(CAST(:levels AS smallint[]), CAST(:indexes AS bigint[])) AS w(level, index)"
    " ON n.level = w.level AND n.index = w.index"
)


def _nodes_query(
    dialect: str, nodes: Sequence[tuple[int, int]]
) -> tuple[TextClause | Select[int, int, bytes], dict[str, Any]]:
    if dialect == "postgresql":
        return _NODES_POSTGRESQL, {
            "levels": [level for level, _ in nodes],
            "indexes": [index for _, index in nodes],
        }
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
    return select(LogTreeNode.level, LogTreeNode.index, LogTreeNode.hash).where(condition), {}


class RawReads:
    """Read-only SELECTs on one pooled DBAPI connection of its own, outside any session.

    Why not a session: on SQLite every SQLAlchemy transaction begins IMMEDIATE (app.db), taking
    the database's write lock, so concurrent tile reads would queue behind each other and
    behind appends, each waiting in SQLite's sleeping busy handler. A SELECT in autocommit
    mode is already a consistent snapshot and takes no write lock (WAL). On PostgreSQL too
    each SELECT runs in autocommit mode, as its own snapshot: no BEGIN before it and no
    ROLLBACK when the connection goes back to the pool (two round trips of the three a tile
    read would otherwise make), and psycopg fetches results in binary. Module-level
    statements are compiled once; use as a context manager (the connection goes back to the
    pool as it came).
    """

    def __init__(self, engine: Engine) -> None:
        self.dialect = engine.dialect
        self._connection = engine.raw_connection()
        self._autocommit = self.dialect.name == "postgresql"
        self._binary = self.dialect.driver == "psycopg"
        if self._autocommit:
            self._connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]

    def __enter__(self) -> RawReads:
        return self

    def __exit__(self, *_: object) -> None:
        try:
            if self._autocommit:
                self._connection.dbapi_connection.autocommit = False  # type: ignore[union-attr]
        except Exception:
            # A broken connection: the pool must not hand it out again (in autocommit mode).
            self._connection.invalidate()
        finally:
            self._connection.close()

    def rows(
        self, statement: ClauseElement, params: dict[str, Any], *, constant: bool = True
    ) -> list[Any]:
        """Run one SELECT. `constant`: the statement is a module-level object, compiled once
        (a statement built per call is compiled with its values inlined, ints only)."""
        if constant:
            key = (self.dialect.name, id(statement))
            if key not in _COMPILED:
                fresh = statement.compile(dialect=self.dialect)
                assert isinstance(fresh, SQLCompiler)
                _COMPILED[key] = fresh
            compiled = _COMPILED[key]
            values = compiled.construct_params(params)
            positions = compiled.positiontup
            sql = compiled.string
            arguments: Any = [values[name] for name in positions] if positions else values
        else:
            assert not params
            sql = str(
                statement.compile(dialect=self.dialect, compile_kwargs={"literal_binds": True})
            )
            arguments = ()
        cursor = self._connection.cursor()
        try:
            if self._binary:
                # Results in binary: bytea arrives as its bytes, where the text format would
                # have the server hex-encode a 60 KB bundle and the driver decode it again.
                cursor.execute(sql, arguments, binary=True)  # type: ignore[call-arg]
            else:
                cursor.execute(sql, arguments)
            return list(cursor.fetchall())
        finally:
            cursor.close()


_COMPILED: dict[tuple[str, int], SQLCompiler] = {}


def node_reader(source: Session | RawReads) -> NodeReader:
    """A `porchlight.tlog.merkle.NodeReader` over the stored tree (one query per call)."""
    dialect = (
        source.dialect.name if isinstance(source, RawReads) else source.get_bind().dialect.name
    )

    def read(nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        if not nodes:
            return []
        statement, params = _nodes_query(dialect, nodes)
        rows: Iterable[Any]
        if isinstance(source, RawReads):
            rows = source.rows(statement, params, constant=statement is _NODES_POSTGRESQL)
        else:
            rows = source.execute(statement, params)
        found = {(level, index): bytes(value) for level, index, value in rows}
        missing = [node for node in nodes if node not in found]
        if missing:
            raise MissingNodes(f"stored tree is missing node(s) {missing[:5]}")
        return [found[node] for node in nodes]

    return read


# All of a batch's nodes in one statement, the columns as arrays (a few hundred rows).
_INSERT_NODES_POSTGRESQL = text(
    'INSERT INTO log_tree_nodes (level, "index", hash)'
    " SELECT * FROM unnest(CAST(:levels AS smallint[]), CAST(:indexes AS bigint[]),"
    " CAST(:hashes AS bytea[]))"
)


def store_leaves(session: Session, start: int, leaf_hashes: Sequence[bytes]) -> None:
    """Store leaves start, start+1, ... and the inner nodes they complete.

    Reads at most one older node per level (the left siblings), inserts on average two rows
    per leaf, in one statement on PostgreSQL. Must run under the log head's lock, in the
    transaction that indexes the entries.
    """
    created = append_leaves(start, leaf_hashes, node_reader(session))
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.execute(
            _INSERT_NODES_POSTGRESQL,
            {
                "levels": [level for level, _, _ in created],
                "indexes": [index for _, index, _ in created],
                "hashes": [value for _, _, value in created],
            },
        )
    else:
        _insert_nodes(session, [{"level": lv, "index": i, "hash": h} for lv, i, h in created])


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


_SIZES = select(
    select(func.max(LogCheckpoint.size)).scalar_subquery(),
    select(LogHead.size).where(LogHead.id == 1).scalar_subquery(),
)


def published_and_committed(reads: RawReads) -> tuple[int | None, int]:
    """(size of the latest published checkpoint or None, integrated size), one statement."""
    published, committed = reads.rows(_SIZES, {})[0]
    return published, committed


def root_hash(session: Session, size: int) -> bytes:
    """MTH of the first `size` entries, from at most log2(size) stored nodes."""
    return tree_root(size, node_reader(session))


def inclusion(session: Session, index: int, size: int) -> list[bytes]:
    """RFC 9162 2.1.3.1 inclusion proof of entry `index` in the tree of `size` entries."""
    return inclusion_proof(index, size, node_reader(session))


def inclusion_with_root(
    source: Session | RawReads, index: int, size: int
) -> tuple[bytes, bytes, list[bytes]]:
    """(leaf hash, root, inclusion proof) of entry `index` in the tree of `size`, from ONE
    query: the proof's nodes, the root's nodes and the leaf are read together."""
    read = node_reader(source)
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


# Tiles and bundles are read with ONE statement each: the published size (does the tile exist
# yet?) and the tile's rows together (the outer join still yields the size when the range has
# no rows), in one snapshot. The bound is the latest published checkpoint's size, not the
# integrated size: the integrated size moves with every entry, and a size that anyone could
# read between checkpoints would count single events (DESIGN promise 3; app.log.checkpoints).
# A full verification reads every tile and bundle of the log, thousands of requests, so
# per-request cost matters (docs/benchmarks.md).
_PUBLISHED_SIZE = select(func.coalesce(func.max(LogCheckpoint.size), 0)).scalar_subquery()
_HASH_TILE = (
    select(_PUBLISHED_SIZE, LogTreeNode.hash)
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
    select(_PUBLISHED_SIZE, LogEntry.entry)
    .select_from(LogHead)
    .outerjoin(
        LogEntry,
        and_(LogEntry.index >= bindparam("first"), LogEntry.index < bindparam("end")),
    )
    .where(LogHead.id == 1)
    .order_by(LogEntry.index)
)


def hash_tile(source: Engine | RawReads, tile: Tile) -> bytes | None:
    """A tlog-tiles hash tile of the published tree, or None if it has no such tile (yet).

    A tile at level L holds the nodes at tree level 8L; any width up to what the latest
    published checkpoint covers is served (never beyond it, though the tree may have more), so
    a client holding an older checkpoint still gets the partial tile it names.
    Level-0 tiles come from the node table, not from `log_entries`: the tree records what was
    integrated, so an entry edited afterwards disagrees with its tile and auditors name it.
    Served as stored, on every request (nothing cached), even if rows are missing: judging
    them is the auditor's job.
    """
    assert tile.level is not None
    first = tile.index * TILE_WIDTH
    params = {"level": TILE_HEIGHT * tile.level, "first": first, "end": first + tile.width}
    rows = _raw_rows(source, _HASH_TILE, params)
    if first + tile.width > level_width(rows[0][0], tile.level):
        return None
    return b"".join([bytes(value) for _, value in rows if value is not None])


def entry_bundle(source: Engine | RawReads | Connection, tile: Tile) -> bytes | None:
    """A tlog-tiles entry bundle of the published log, or None if it has no such bundle (yet):
    like hash tiles, never beyond the latest published checkpoint.

    Read on its own connection from the engine or on the given raw reads (see `RawReads`),
    or in the transaction of the given connection. Served from the rows as they are, on every
    request (nothing cached): if the table was edited, auditors see the edit.
    """
    first = tile.index * TILE_WIDTH
    params = {"first": first, "end": first + tile.width}
    if isinstance(source, Connection):
        rows = list(source.execute(_ENTRY_BUNDLE, params).all())
    else:
        rows = _raw_rows(source, _ENTRY_BUNDLE, params)
    if first + tile.width > rows[0][0]:
        return None
    return encode_bundle([bytes(entry) for _, entry in rows if entry is not None])


def _raw_rows(
    source: Engine | RawReads, statement: ClauseElement, params: dict[str, Any]
) -> list[Any]:
    if isinstance(source, RawReads):
        return source.rows(statement, params)
    with RawReads(source) as reads:
        return reads.rows(statement, params)
