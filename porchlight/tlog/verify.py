"""Full, independent verification of a tiled transparency log.

Works on any c2sp.org/tlog-tiles log (a local directory such as a Tessera log, or an HTTP
prefix serving `checkpoint`, `tile/<L>/<N>[.p/<W>]` and `tile/entries/<N>[.p/<W>]`):

1. the checkpoint (c2sp.org/tlog-checkpoint) must carry a valid signature by the given
   verifier key (c2sp.org/signed-note);
2. every entry bundle up to the checkpoint's size is fetched and each entry's RFC 6962 leaf
   hash recomputed; the whole tree is rebuilt from those leaf hashes (RFC 9162 2.1.1) and its
   root must equal the signed root;
3. every hash tile above level 0 must equal the recomputed complete-subtree hashes, and so
   must every level-0 tile (the log's own leaf hashes) when `leaf_tiles` (the default);
   without it they are read only when step 2 fails, to name the first bad entry. A wrong
   level-0 tile cannot make a false entry or inclusion proof pass, as whoever uses it checks
   it against the signed root that step 2 vouched for; skipping them halves the reads
   over HTTP (`porchlight audit verify --server` skips them unless --all-tiles);
4. against the previously verified checkpoint, kept in a JSON state file: the new tree must
   contain the old one (same root at the old size; rebuilding the whole tree is a stronger
   check than an RFC 9162 2.1.4 consistency proof), and the checkpoint may not roll back.
   An older checkpoint, checked on purpose (`allow_older`), must be a prefix of the history
   verified before: its complete 256-entry blocks must have the hashes the state kept, and
   the entries of its last partial block the leaf hashes of that history, taken from the
   state's tail or from the source's complete level-0 tile or entry bundle of that block
   (believed only if it hashes to the block hash the state kept). When neither has them, it
   is refused as uncheckable, never accepted unchecked.

Failures raise `VerifyError` naming the first bad entry index when one can be determined
(an entry whose leaf hash disagrees with the log's own hash tiles is the first place the
history diverges), otherwise the bad tile or the bad or inconsistent checkpoint.

The state file also keeps the hashes of each complete 256-entry block and the leaf hashes of
the last partial block, so that when a log later presents a rewritten history (a fork
re-signed with the log's own key), the first differing block, or entry within the tail, is named.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import threading
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from porchlight.files import write_atomically
from porchlight.tlog.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from porchlight.tlog.merkle import HASH_SIZE, LevelBuilder, complete_levels, root_from_levels
from porchlight.tlog.note import Ed25519Verifier, NoteError, parse_verifier_key
from porchlight.tlog.tiles import (
    TILE_HEIGHT,
    TILE_WIDTH,
    Tile,
    TileError,
    decode_bundle,
    leaf_hashes,
    split_hashes,
    tile_count,
    tile_levels,
    tiles_at_level,
)

CHECKPOINT_PATH = "checkpoint"
STATE_VERSION = 1

Progress = Callable[[str, int, int], None]


class VerifyError(Exception):
    """The log failed verification. `entry` is the first bad entry index, when known."""

    def __init__(self, message: str, *, entry: int | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.entry = entry
        self.path = path


class WrongOrigin(VerifyError):
    """The checkpoint is validly signed, but for another log than the one expected."""


class TileSource(Protocol):
    """Where a log's files come from. `read` returns None for a file that does not exist.

    `parallel_reads` is how many reads may be in flight at once (`read` must then be
    thread-safe): 1 for a disk, more over a network where round trips dominate."""

    @property
    def parallel_reads(self) -> int: ...

    def describe(self) -> str: ...

    def read(self, path: str) -> bytes | None: ...


@dataclass
class DirectorySource:
    """A log laid out on disk, as Tessera's POSIX storage writes it."""

    root: Path
    parallel_reads: int = 1

    def describe(self) -> str:
        return str(self.root)

    def read(self, path: str) -> bytes | None:
        target = self.root / path
        try:
            return target.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise VerifyError(f"{path}: cannot read: {error}", path=path) from error


class ReadRefused(VerifyError):
    """The server answered 401 or 403 to a read: the caller lacks the right credentials."""

    def __init__(self, status: int, url: str, path: str) -> None:
        super().__init__(f"{url}: HTTP {status}", path=path)
        self.status = status
        self.url = url


class HttpSource:
    """A log served over HTTP(S) under `prefix` (for Porchlight, `{server}/log`).

    `headers` go with every read: Porchlight serves entry bundles only to auditors, so an
    auditor passes `{"Authorization": "Bearer <token>"}`. A 401 or 403 raises `ReadRefused`.

    Reads use the standard library's HTTP client, one keep-alive connection per reading
    thread: a full verification makes thousands of small requests, and per request this costs
    the verifier about a third of the CPU time of httpx (docs/benchmarks.md). HTTPS checks the
    certificate against the system's trust store (or $SSL_CERT_FILE); an http(s)_proxy from
    the environment is honoured (no_proxy too). Redirects are not followed.
    """

    def __init__(
        self,
        prefix: str,
        *,
        parallel_reads: int = 8,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        parts = urlsplit(prefix.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise VerifyError(f"not an http(s) URL: {prefix!r}")
        self.prefix = prefix.rstrip("/")
        self.parallel_reads = parallel_reads
        self.headers = {"User-Agent": "porchlight-audit", **(headers or {})}
        self._timeout = timeout
        self._scheme = parts.scheme
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._base_path = parts.path
        self._proxy = _proxy_for(parts.scheme, parts.netloc)
        self._local = threading.local()
        self._connections: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def describe(self) -> str:
        return self.prefix

    def close(self) -> None:
        """Close every connection this source opened."""
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()

    def _connect(self) -> http.client.HTTPConnection:
        connection: http.client.HTTPConnection
        if self._proxy is not None and self._scheme == "http":
            # A plain-HTTP proxy takes the absolute URL (see `_target`).
            connection = http.client.HTTPConnection(*self._proxy, timeout=self._timeout)
        elif self._scheme == "https":
            host, port = self._proxy or (self._host, self._port)
            connection = http.client.HTTPSConnection(
                host, port, timeout=self._timeout, context=ssl.create_default_context()
            )
            if self._proxy is not None:
                connection.set_tunnel(self._host, self._port)
        else:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)
        with self._lock:
            self._connections.append(connection)
        return connection

    def _target(self, path: str) -> str:
        target = f"{self._base_path}/{path}"
        if self._proxy is not None and self._scheme == "http":
            return f"{self.prefix}/{path}"
        return target

    def read(self, path: str) -> bytes | None:
        url = f"{self.prefix}/{path}"
        for attempt in (1, 2):
            kept: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
            fresh = kept is None
            connection = self._connect() if kept is None else kept
            self._local.connection = connection
            try:
                connection.request("GET", self._target(path), headers=self.headers)
                response = connection.getresponse()
                body = response.read()
                break
            except (OSError, http.client.HTTPException) as error:
                connection.close()
                self._local.connection = None
                # A kept-alive connection the server has since closed fails on first use:
                # retry once on a new one (GET is idempotent). A fresh one failing is final.
                if fresh or attempt == 2:
                    raise VerifyError(f"{url}: {error}", path=path) from error
        if response.will_close:
            connection.close()
            self._local.connection = None
        if response.status == 404:
            return None
        if response.status in (401, 403):
            raise ReadRefused(response.status, url, path)
        if response.status != 200:
            raise VerifyError(f"{url}: HTTP {response.status}", path=path)
        return body


def _proxy_for(scheme: str, netloc: str) -> tuple[str, int] | None:
    """The proxy (host, port) the environment names for this URL, or None."""
    if urllib.request.proxy_bypass(netloc):
        return None
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy:
        return None
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.scheme != "http" or not parts.hostname:
        raise VerifyError(f"unsupported {scheme}_proxy {proxy!r}: only http:// proxies")
    return parts.hostname, parts.port or 80


@dataclass(frozen=True)
class VerifiedState:
    """What an auditor remembers about the last checkpoint it verified."""

    origin: str
    vkey: str
    size: int
    root_hash: bytes
    checkpoint: str
    block_hashes: tuple[bytes, ...]
    tail_leaf_hashes: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "origin": self.origin,
            "vkey": self.vkey,
            "size": self.size,
            "root_hash": base64.b64encode(self.root_hash).decode(),
            "checkpoint": self.checkpoint,
            "block_hashes": base64.b64encode(b"".join(self.block_hashes)).decode(),
            "tail_leaf_hashes": base64.b64encode(b"".join(self.tail_leaf_hashes)).decode(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VerifiedState:
        try:
            if data["version"] != STATE_VERSION:
                raise ValueError(f"unknown state version {data['version']!r}")
            state = cls(
                origin=str(data["origin"]),
                vkey=str(data["vkey"]),
                size=int(data["size"]),
                root_hash=base64.b64decode(data["root_hash"], validate=True),
                checkpoint=str(data["checkpoint"]),
                block_hashes=_split(base64.b64decode(data["block_hashes"], validate=True)),
                tail_leaf_hashes=_split(base64.b64decode(data["tail_leaf_hashes"], validate=True)),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise VerifyError(f"state file is malformed: {error}") from error
        if (
            len(state.block_hashes) != state.size // TILE_WIDTH
            or len(state.tail_leaf_hashes) != state.size % TILE_WIDTH
        ):
            raise VerifyError("state file is malformed: block hashes do not match its size")
        return state


def _split(data: bytes) -> tuple[bytes, ...]:
    if len(data) % HASH_SIZE:
        raise ValueError("hash list is not a whole number of hashes")
    return tuple(data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE))


def load_state(path: Path) -> VerifiedState | None:
    """The saved state, or None when the file does not exist yet."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise VerifyError(f"state file {path} is not JSON: {error}") from error
    if not isinstance(data, dict):
        raise VerifyError(f"state file {path} is not a JSON object")
    return VerifiedState.from_json(data)


def save_state(path: Path, state: VerifiedState) -> None:
    """Write the state atomically and durably (see `write_atomically`): a crash or a
    concurrent run never leaves an empty, half-written or mixed state file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, (json.dumps(state.to_json(), indent=1) + "\n").encode())


@dataclass(frozen=True)
class VerifiedLog:
    """The outcome of a successful verification."""

    checkpoint: Checkpoint
    checkpoint_text: str
    state: VerifiedState
    previous: VerifiedState | None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _read_tile(source: TileSource, tile: Tile) -> tuple[bytes | None, str]:
    """Read a tile; a missing partial tile falls back to its full replacement, truncated
    later by the caller (tlog-tiles lets logs replace partial tiles with full ones)."""
    path = tile.path()
    data = source.read(path)
    if data is None and tile.width < TILE_WIDTH:
        full = tile.full().path()
        data = source.read(full)
        if data is not None:
            return data, full
    return data, path


def _read_tiles(
    source: TileSource, tiles: Iterable[Tile]
) -> Iterator[tuple[Tile, bytes | None, str]]:
    """Read tiles in order, keeping a bounded window of reads in flight: over HTTP the cost
    is round trips, not bytes, and thousands of them one after another would dominate.
    `tiles` is consumed only as far as the caller reads (plus that window)."""
    if source.parallel_reads <= 1:
        for tile in tiles:
            data, path = _read_tile(source, tile)
            yield tile, data, path
        return
    pool = ThreadPoolExecutor(max_workers=source.parallel_reads)
    try:
        pending: deque[tuple[Tile, Future[tuple[bytes | None, str]]]] = deque()
        upcoming = iter(tiles)
        for tile in upcoming:
            pending.append((tile, pool.submit(_read_tile, source, tile)))
            if len(pending) >= 4 * source.parallel_reads:
                break
        while pending:
            tile, future = pending.popleft()
            following = next(upcoming, None)
            if following is not None:
                pending.append((following, pool.submit(_read_tile, source, following)))
            data, path = future.result()
            yield tile, data, path
    finally:
        # A failed read, or a caller that stopped early (the first mismatch was found):
        # reads not yet started are dropped rather than waited for.
        pool.shutdown(wait=True, cancel_futures=True)


@dataclass
class _Entries:
    """Leaf hashes gathered so far (and the tree nodes above them, hashed tile by tile as
    they arrive, while later tiles are being fetched) and the first problem found, by entry
    index."""

    tree: LevelBuilder = field(default_factory=lambda: LevelBuilder(TILE_WIDTH))
    first_bad: int | None = None
    problem: str = ""
    path: str | None = None

    @property
    def hashes(self) -> list[bytes]:
        return self.tree.leaf_hashes

    def flag(self, index: int, problem: str, path: str) -> None:
        if self.first_bad is None or index < self.first_bad:
            self.first_bad, self.problem, self.path = index, problem, path


def _gather_entries(source: TileSource, size: int, progress: Progress | None) -> _Entries:
    found = _Entries()
    last = tile_count(size, None) - 1
    for number, (bundle, data, path) in enumerate(_read_tiles(source, tiles_at_level(size, None))):
        start = bundle.index * TILE_WIDTH
        entries: list[bytes] = []
        if data is None:
            found.flag(start, f"entry {start} is missing: {bundle.path()} not found", path)
        else:
            try:
                entries = decode_bundle(data)
            except TileError as error:
                found.flag(start, f"entry bundle {path} is malformed ({error})", path)
            is_full_fallback = path != bundle.path()
            if is_full_fallback:
                entries = entries[: bundle.width]
            if len(entries) < bundle.width:
                missing = start + len(entries)
                found.flag(missing, f"entry {missing} is missing from {path}", path)
            elif len(entries) > bundle.width:
                extra = start + bundle.width
                found.flag(extra, f"{path} holds entries beyond its width (entry {extra})", path)
                entries = entries[: bundle.width]
        found.tree.add(leaf_hashes(entries))
        if len(found.hashes) != start + len(entries):
            # A gap: later hashes would sit at wrong indexes, so stop gathering here.
            break
        if len(entries) < bundle.width:
            break
        if progress and (number % 64 == 63 or number == last):
            progress("entries", start + bundle.width, size)
    return found


@dataclass(frozen=True)
class _Mismatch:
    """The first leaf hash (by entry index) that differs from the log's level-0 tiles."""

    entry: int
    path: str


def _compare_level0(
    source: TileSource, hashes: Sequence[bytes], size: int
) -> tuple[_Mismatch | None, list[str]]:
    """Compare recomputed leaf hashes with the level-0 tiles.

    Returns the first divergent entry, and the problems with the tiles themselves (missing or
    the wrong length). Only the tiles over `hashes` are read: when entries were missing,
    later tiles have nothing to be compared with, and a checkpoint may claim any size, so
    the reads stay bounded by the entries the log actually served."""
    tile_problems: list[str] = []
    for tile, data, path in _read_tiles(source, _tiles_over(size, len(hashes))):
        start = tile.index * TILE_WIDTH
        if data is None:
            tile_problems.append(f"{tile.path()} not found")
            continue
        data = data[: tile.width * HASH_SIZE] if path != tile.path() else data
        if len(data) != tile.width * HASH_SIZE:
            tile_problems.append(f"{path} is {len(data)} bytes, expected {tile.width * 32}")
        computed = b"".join(hashes[start : start + tile.width])
        if data[: len(computed)] == computed:
            continue
        for offset in range(0, len(computed), HASH_SIZE):
            if data[offset : offset + HASH_SIZE] != computed[offset : offset + HASH_SIZE]:
                return _Mismatch(start + offset // HASH_SIZE, path), tile_problems
    return None, tile_problems


def _tiles_over(size: int, covered: int) -> Iterator[Tile]:
    """The level-0 tiles of a tree of `size` leaves that hold any of the first `covered`."""
    for tile in tiles_at_level(size, 0):
        if tile.index * TILE_WIDTH >= covered:
            return
        yield tile


def _entry_mismatch_error(mismatch: _Mismatch) -> VerifyError:
    return VerifyError(
        f"entry {mismatch.entry} does not match the log's tree: its leaf hash differs from "
        f"{mismatch.path} (the entry was altered, removed, inserted or reordered)",
        entry=mismatch.entry,
        path=mismatch.path,
    )


def _check_upper_tiles(source: TileSource, levels: Sequence[Sequence[bytes]], size: int) -> None:
    for level in tile_levels(size):
        if level == 0:
            continue
        row = levels[TILE_HEIGHT * level]
        for tile, data, path in _read_tiles(source, tiles_at_level(size, level)):
            if data is None:
                raise VerifyError(f"tile {tile.path()} not found", path=tile.path())
            data = data[: tile.width * HASH_SIZE] if path != tile.path() else data
            start = tile.index * TILE_WIDTH
            if data != b"".join(row[start : start + tile.width]):
                raise VerifyError(
                    f"tile {path} does not match the tree recomputed from the entries",
                    path=path,
                )


def _fork_detail(previous: VerifiedState, levels: Sequence[Sequence[bytes]], size: int) -> str:
    """Where the presented history of `size` entries first differs from the one verified
    before, within the entries both cover."""
    common = min(size, previous.size)
    blocks = levels[TILE_HEIGHT] if len(levels) > TILE_HEIGHT else []
    for block, old in enumerate(previous.block_hashes[: common // TILE_WIDTH]):
        if block >= len(blocks) or blocks[block] != old:
            start = block * TILE_WIDTH
            return f"; first differing entry is in {start}..{start + TILE_WIDTH - 1}"
    tail_start = len(previous.block_hashes) * TILE_WIDTH
    for offset, old in enumerate(previous.tail_leaf_hashes[: max(0, common - tail_start)]):
        index = tail_start + offset
        if index >= len(levels[0]) or levels[0][index] != old:
            return f"; first differing entry is {index}"
    return ""


def _first_difference(start: int, ours: Sequence[bytes], theirs: Sequence[bytes]) -> int | None:
    """The index of the first leaf hash that differs, numbering `ours[0]` as entry `start`."""
    for offset, (mine, other) in enumerate(zip(ours, theirs, strict=False)):
        if mine != other:
            return start + offset
    return None


def _block_leaf_hashes(source: TileSource, block: int, block_hash: bytes) -> list[bytes] | None:
    """The 256 leaf hashes of complete block `block`, from the source's full level-0 tile or
    full entry bundle, if either hashes to `block_hash`; otherwise None.

    `block_hash` comes from the state file, vouched for by the root verified before, so
    leaf hashes that hash to it are that history's own, whoever serves them."""
    for tile in (Tile(0, block), Tile(None, block)):
        data = source.read(tile.path())
        if data is None:
            continue
        try:
            hashes = split_hashes(data) if tile.level == 0 else leaf_hashes(decode_bundle(data))
        except TileError:
            continue
        if len(hashes) == TILE_WIDTH and complete_levels(hashes)[TILE_HEIGHT][0] == block_hash:
            return hashes
    return None


def _check_consistent(
    source: TileSource,
    previous: VerifiedState,
    checkpoint: Checkpoint,
    levels: Sequence[Sequence[bytes]],
) -> None:
    """Raise `VerifyError` unless the verified tree (`levels`, of the checkpoint's size) and
    the one verified before are the same history up to the smaller of the two sizes."""
    size = checkpoint.size

    def inconsistent(detail: str) -> VerifyError:
        return VerifyError(
            f"checkpoint (size {size}, root {_b64(checkpoint.root_hash)}) is inconsistent "
            f"with the checkpoint verified before (size {previous.size}, root "
            f"{_b64(previous.root_hash)}): the log's history was rewritten or forked{detail}",
            path=CHECKPOINT_PATH,
        )

    if previous.size == 0:
        return
    if size >= previous.size:
        if root_from_levels(levels, previous.size) != previous.root_hash:
            raise inconsistent(_fork_detail(previous, levels, size))
        return
    # An older checkpoint: its root at `size` cannot be derived from the state's root, so
    # the entries it commits to (verified against its signature) are compared with what the
    # state remembers of that history: whole 256-entry blocks by hash, the last partial
    # block leaf by leaf.
    full_blocks, width = divmod(size, TILE_WIDTH)
    blocks = levels[TILE_HEIGHT] if len(levels) > TILE_HEIGHT else []
    for block in range(full_blocks):
        if blocks[block] != previous.block_hashes[block]:
            start = block * TILE_WIDTH
            raise inconsistent(f"; first differing entry is in {start}..{start + TILE_WIDTH - 1}")
    if width == 0:
        return
    start = full_blocks * TILE_WIDTH
    ours = levels[0][start:size]
    if full_blocks == len(previous.block_hashes):
        # The partial block lies in the state's own tail, whose leaf hashes it kept.
        honest: Sequence[bytes] | None = previous.tail_leaf_hashes
    else:
        # The state kept only this block's hash: its leaf hashes must come from the source,
        # and are believed only if they hash to it.
        honest = _block_leaf_hashes(source, full_blocks, previous.block_hashes[full_blocks])
    if honest is None:
        raise VerifyError(
            f"cannot check checkpoint (size {size}) against the checkpoint verified before "
            f"(size {previous.size}): the state file keeps entries "
            f"{start}..{start + TILE_WIDTH - 1} only as one hash, and {source.describe()} has "
            f"no complete {Tile(0, full_blocks).path()} or {Tile(None, full_blocks).path()} "
            "that matches it; verify this checkpoint against a copy of the log that has grown "
            f"past entry {start + TILE_WIDTH - 1}",
            path=CHECKPOINT_PATH,
        )
    differs = _first_difference(start, ours, honest[:width])
    if differs is not None:
        raise inconsistent(f"; first differing entry is {differs}")


def state_for(
    vkey: str, checkpoint: Checkpoint, text: str, levels: Sequence[Sequence[bytes]]
) -> VerifiedState:
    size = checkpoint.size
    blocks = levels[TILE_HEIGHT][: size // TILE_WIDTH] if len(levels) > TILE_HEIGHT else []
    tail_start = size - size % TILE_WIDTH
    return VerifiedState(
        origin=checkpoint.origin,
        vkey=vkey,
        size=size,
        root_hash=checkpoint.root_hash,
        checkpoint=text,
        block_hashes=tuple(blocks),
        tail_leaf_hashes=tuple(levels[0][tail_start:size]) if size else (),
    )


def verify_log(
    source: TileSource,
    vkey: str,
    *,
    checkpoint_text: bytes | None = None,
    origin: str | None = None,
    previous: VerifiedState | None = None,
    allow_older: bool = False,
    leaf_tiles: bool = True,
    progress: Progress | None = None,
) -> VerifiedLog:
    """Verify the whole log against `vkey`; raise `VerifyError` at the first problem.

    `checkpoint_text` verifies a given checkpoint instead of the source's current one.
    `origin` is the log the checkpoint must be for; by default the verifier key's name, which
    c2sp.org/tlog-checkpoint says should be the origin: a key may sign for several logs, and
    a client must know which log it expects rather than take the checkpoint's word for it.
    `previous` is the state from the last successful run (see `load_state`). A checkpoint
    smaller than `previous` is a rollback, unless `allow_older` (an archived checkpoint that
    the caller chose to check): then it is checked against what the state remembers.
    `leaf_tiles=False` reads the level-0 hash tiles only when the entries fail (step 3 of
    the module docstring)."""
    try:
        verifier: Ed25519Verifier = parse_verifier_key(vkey)
    except NoteError as error:
        raise VerifyError(f"verifier key: {error}") from error
    raw = checkpoint_text if checkpoint_text is not None else source.read(CHECKPOINT_PATH)
    if raw is None:
        raise VerifyError(f"checkpoint not found at {source.describe()}", path=CHECKPOINT_PATH)
    try:
        signed = open_checkpoint(raw, verifier)
    except (CheckpointError, NoteError) as error:
        raise VerifyError(f"checkpoint: {error}", path=CHECKPOINT_PATH) from error
    checkpoint = signed.checkpoint
    size = checkpoint.size
    text = signed.text()
    expected = verifier.name if origin is None else origin
    if checkpoint.origin != expected:
        source_of_expectation = "the verifier key's name" if origin is None else "expected"
        raise WrongOrigin(
            f"checkpoint is for log {checkpoint.origin!r}, not {expected!r} "
            f"({source_of_expectation})",
            path=CHECKPOINT_PATH,
        )

    if previous is not None:
        if previous.vkey != vkey or previous.origin != checkpoint.origin:
            raise VerifyError(
                f"state file is for log {previous.origin!r} ({previous.vkey}), not "
                f"{checkpoint.origin!r} ({vkey})"
            )
        if size < previous.size and not allow_older:
            raise VerifyError(
                f"checkpoint (size {size}) is older than the checkpoint verified before "
                f"(size {previous.size}): the log rolled back",
                path=CHECKPOINT_PATH,
            )

    found = _gather_entries(source, size, progress)
    levels: list[list[bytes]] = [[]]
    computed_root = b""
    if found.first_bad is None:
        levels = found.tree.levels()
        computed_root = root_from_levels(levels, size)
    matches = found.first_bad is None and computed_root == checkpoint.root_hash
    mismatch: _Mismatch | None = None
    tile_problems: list[str] = []
    if leaf_tiles or not matches:
        # The level-0 tiles are the log's own record of every leaf hash: where they first
        # differ from the entries is where history was changed.
        mismatch, tile_problems = _compare_level0(source, found.hashes, size)
    if found.first_bad is not None:
        # Entries are missing or unreadable: an earlier divergence is still the first bad one.
        if mismatch is not None and mismatch.entry < found.first_bad:
            raise _entry_mismatch_error(mismatch)
        raise VerifyError(found.problem, entry=found.first_bad, path=found.path)

    if not matches:
        # The signed root vouches for neither the entries nor the tiles. Where they disagree
        # is where history was changed; if they agree, both were rewritten consistently.
        if mismatch is not None:
            raise _entry_mismatch_error(mismatch)
        detail = _fork_detail(previous, levels, size) if previous is not None else ""
        raise VerifyError(
            f"checkpoint root {_b64(checkpoint.root_hash)} (size {size}) does not match the root "
            f"recomputed from the entries and tiles, {_b64(computed_root)}{detail}",
            path=CHECKPOINT_PATH,
        )
    # From here on the entries are vouched for by the signed root: any difference is the tiles'.
    if mismatch is not None:
        raise VerifyError(
            f"tile {mismatch.path} is corrupt: its hash for entry {mismatch.entry} does not "
            "match the entry (the entries themselves match the signed checkpoint)",
            path=mismatch.path,
        )
    if tile_problems:
        raise VerifyError(f"tile {tile_problems[0]}", path=tile_problems[0].split(" ")[0])
    _check_upper_tiles(source, levels, size)

    if previous is not None:
        _check_consistent(source, previous, checkpoint, levels)
    return VerifiedLog(checkpoint, text, state_for(vkey, checkpoint, text, levels), previous)
