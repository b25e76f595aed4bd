"""The tiled log layout of c2sp.org/tlog-tiles: tile paths, hash tiles and entry bundles.

- "Merkle Tree": tiles have height 8. The tile at level L, index N holds the hashes of the
  complete subtrees at tree level 8*L with indexes N*256 .. N*256+255 (so a level-0 tile is
  256 leaf hashes, concatenated, 32 bytes each). A tree of size s has floor(s / 256**L)
  hashes at tile level L; the last tile of a level is partial when that count is not a
  multiple of 256, and is then served at `<N>.p/<W>` with its width W in 1..255.
- "Entry bundles": `tile/entries/<N>[.p/<W>]` holds entries N*256 .. N*256+W-1, each as a
  big-endian uint16 length followed by that many bytes.
- "Paths": <N> is written in groups of three decimal digits, every group but the last
  prefixed with `x` (1234067 -> x001/x234/067); <L> is a decimal integer from 0 to 63.
  A path is also refused when the tile could only exist in a log of more than 2**63 - 1
  entries: log sizes and indexes here are signed 64-bit integers (as in Go's tlog, and in
  the server's SQL columns), so such a tile names nothing any log can hold.

`build_tiles` produces every file of a log of a given size from its entries, so tests, benches
and a server that renders static tiles share one implementation.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from porchlight.files import sync_directory, write_atomically
from porchlight.tlog.merkle import HASH_SIZE, NodeReader, complete_levels, node_hash

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_ENTRY_SIZE = 0xFFFF
MAX_LEVEL = 63
MAX_LOG_SIZE = (1 << 63) - 1

_LEAF_PREFIX = b"\x00"
_PATH = re.compile(r"tile/(entries|\d+)/((?:x\d{3}/)*\d{3})(?:\.p/(\d+))?")


class TileError(ValueError):
    """A malformed tile path, tile or entry bundle."""


@dataclass(frozen=True)
class Tile:
    """A tile coordinate: `level` is None for an entry bundle; `width` is 1..256."""

    level: int | None
    index: int
    width: int = TILE_WIDTH

    def path(self) -> str:
        kind = "entries" if self.level is None else str(self.level)
        suffix = "" if self.width == TILE_WIDTH else f".p/{self.width}"
        return f"tile/{kind}/{encode_index(self.index)}{suffix}"

    def full(self) -> Tile:
        """The same tile at full width (a partial tile's eventual replacement)."""
        return Tile(self.level, self.index)


def encode_index(index: int) -> str:
    """tlog-tiles index path element: 3-digit groups, all but the last `x`-prefixed."""
    if index < 0:
        raise TileError(f"negative tile index {index}")
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


def parse_tile_path(path: str) -> Tile:
    """Strictly parse `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`."""
    match = _PATH.fullmatch(path)
    if match is None:
        raise TileError(f"not a tile path: {path!r}")
    kind, index_text, width_text = match.groups()
    index = int(index_text.replace("x", "").replace("/", ""))
    level = None if kind == "entries" else int(kind)
    width = TILE_WIDTH if width_text is None else int(width_text)
    tile = Tile(level, index, width)
    if width_text is not None and not 1 <= width < TILE_WIDTH:
        raise TileError(f"partial tile width out of range: {path!r}")
    if (level is not None and str(level) != kind) or tile.path() != path:
        raise TileError(f"non-canonical tile path: {path!r}")
    if level is not None and level > MAX_LEVEL:
        raise TileError(f"tile level above {MAX_LEVEL}: {path!r}")
    # The log size this tile needs: its last hash covers leaves up to this (exclusive).
    if (index * TILE_WIDTH + width) << (TILE_HEIGHT * (level or 0)) > MAX_LOG_SIZE:
        raise TileError(f"tile beyond any log of up to 2**63 - 1 entries: {path!r}")
    return tile


def level_width(size: int, level: int) -> int:
    """How many hashes tile level `level` holds for a tree of `size` leaves."""
    return size >> (TILE_HEIGHT * level)


def tiles_at_level(size: int, level: int | None) -> Iterator[Tile]:
    """The tiles (or entry bundles, for level None) a tree of `size` leaves has, in order.

    Generated one at a time: `size` comes from a signed checkpoint, and a log that signs a
    huge size (2**62) must not make a verifier build a list of 2**54 tiles before it finds
    that the first one is missing."""
    count = size if level is None else level_width(size, level)
    full, rest = divmod(count, TILE_WIDTH)
    for index in range(full):
        yield Tile(level, index)
    if rest:
        yield Tile(level, full, rest)


def tile_count(size: int, level: int | None) -> int:
    """How many tiles (or entry bundles, for level None) `tiles_at_level` yields."""
    count = size if level is None else level_width(size, level)
    return -(-count // TILE_WIDTH)


def tile_levels(size: int) -> range:
    """The tile levels that hold at least one hash for a tree of `size` leaves."""
    top = 0
    while level_width(size, top + 1):
        top += 1
    return range(top + 1 if size else 0)


def encode_bundle(entries: Iterable[bytes]) -> bytes:
    """An entry bundle: each entry as a big-endian uint16 length, then its bytes."""
    parts: list[bytes] = []
    for entry in entries:
        if len(entry) > MAX_ENTRY_SIZE:
            raise TileError(f"entry of {len(entry)} bytes exceeds {MAX_ENTRY_SIZE}")
        parts.append(len(entry).to_bytes(2, "big"))
        parts.append(entry)
    return b"".join(parts)


def decode_bundle(data: bytes) -> list[bytes]:
    """Split an entry bundle; a truncated length or entry raises `TileError`."""
    entries: list[bytes] = []
    append = entries.append
    position, end = 0, len(data)
    while position < end:
        if position + 2 > end:
            raise TileError(f"entry {len(entries)}: truncated length prefix")
        start = position + 2
        position = start + ((data[position] << 8) | data[position + 1])
        if position > end:
            raise TileError(f"entry {len(entries)}: truncated entry")
        append(data[start:position])
    return entries


def leaf_hashes(entries: Sequence[bytes]) -> list[bytes]:
    """RFC 6962 leaf hashes of many entries (one C-level hash call each)."""
    sha256 = hashlib.sha256
    return [sha256(_LEAF_PREFIX + entry).digest() for entry in entries]


def split_hashes(data: bytes) -> list[bytes]:
    """A hash tile's 32-byte hashes."""
    if len(data) % HASH_SIZE:
        raise TileError(f"hash tile of {len(data)} bytes is not a whole number of hashes")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def build_hash_tiles(leaf_hashes: Sequence[bytes]) -> dict[str, bytes]:
    """Every hash tile, at every level, of the tree over `leaf_hashes`, by path."""
    size = len(leaf_hashes)
    files: dict[str, bytes] = {}
    levels = complete_levels(leaf_hashes) if size else []
    for level in tile_levels(size):
        row = levels[TILE_HEIGHT * level]
        for tile in tiles_at_level(size, level):
            start = tile.index * TILE_WIDTH
            files[tile.path()] = b"".join(row[start : start + tile.width])
    return files


def build_tiles(entries: Sequence[bytes]) -> dict[str, bytes]:
    """Every hash tile and entry bundle of the log holding `entries`, by path."""
    files: dict[str, bytes] = {}
    for bundle in tiles_at_level(len(entries), None):
        start = bundle.index * TILE_WIDTH
        files[bundle.path()] = encode_bundle(entries[start : start + bundle.width])
    files.update(build_hash_tiles(leaf_hashes(entries)))
    return files


def tile_from_nodes(tile: Tile, read_nodes: NodeReader) -> bytes:
    """A hash tile's bytes from stored complete-subtree nodes (what a server serves)."""
    if tile.level is None:
        raise TileError("an entry bundle is not a hash tile")
    level, first = TILE_HEIGHT * tile.level, tile.index * TILE_WIDTH
    return b"".join(read_nodes([(level, first + k) for k in range(tile.width)]))


def write_files(root: Path, files: dict[str, bytes]) -> None:
    """Write tile files under `root`, each atomically and durably (see `write_atomically`:
    a reader never sees half a tile, nor a crash leaves an empty one); each directory is
    synced once, after all its files are in place."""
    directories: set[Path] = set()
    for path, data in files.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, data, sync_parent=False)
        directories.add(target.parent)
    for directory in sorted(directories):
        sync_directory(directory)


def tile_node_reader(read_tile: Callable[[Tile], bytes], size: int) -> NodeReader:
    """A `NodeReader` over hash tiles of a tree of `size` leaves.

    Node (l, i) with l = 8*L + r lives inside tile level L: it is the root of 2**r adjacent
    hashes of that tile's bottom row, so it is rebuilt from at most 128 hashes of one tile.
    """
    cache: dict[Tile, list[bytes]] = {}

    def row(tile: Tile) -> list[bytes]:
        if tile not in cache:
            data = read_tile(tile)
            if len(data) != tile.width * HASH_SIZE:
                raise TileError(f"{tile.path()}: {len(data)} bytes, expected {tile.width * 32}")
            cache[tile] = split_hashes(data)
        return cache[tile]

    def read(nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        hashes: list[bytes] = []
        for level, index in nodes:
            tile_level, rise = divmod(level, TILE_HEIGHT)
            first = index << rise
            tile_index, offset = divmod(first, TILE_WIDTH)
            width = min(TILE_WIDTH, level_width(size, tile_level) - tile_index * TILE_WIDTH)
            if width <= offset + (1 << rise) - 1:
                raise TileError(f"node ({level}, {index}) is not in a tree of size {size}")
            bottom = row(Tile(tile_level, tile_index, width))[offset : offset + (1 << rise)]
            hashes.append(_subtree_root(bottom))
        return hashes

    return read


def _subtree_root(hashes: Sequence[bytes]) -> bytes:
    layer = list(hashes)
    while len(layer) > 1:
        layer = [node_hash(a, b) for a, b in zip(layer[0::2], layer[1::2], strict=True)]
    return layer[0]


def iter_bundle_entries(bundles: Iterable[bytes]) -> Iterator[bytes]:
    """All entries of consecutive bundles, in order."""
    for data in bundles:
        yield from decode_bundle(data)
