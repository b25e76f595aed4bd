"""RFC 6962 Merkle tree hashing, proofs and their verification (RFC 9162 section 2.1).

Hashing (RFC 9162 2.1.1): a leaf hash is SHA-256(0x00 || entry), an interior node is
SHA-256(0x01 || left || right), the empty tree's hash is SHA-256(""). The tree over n leaves
splits at k, the largest power of two smaller than n.

Nodes are named by (level, index): the complete subtree over leaves
[index * 2**level, (index + 1) * 2**level). Only complete subtrees ever need to be stored:
every other hash a proof needs is a right-edge subtree, which is rebuilt from the complete
subtrees it decomposes into (at most log2(n) of them). That is what lets a server answer a
proof by reading O(log n) stored hashes through a `NodeReader` callback.

Proof generation follows RFC 9162 2.1.3.1 (PATH) and 2.1.4.1 (PROOF/SUBPROOF); verification
follows the algorithms of 2.1.3.2 and 2.1.4.2 step by step. Every failure raises `ProofError`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

# Reads the hashes of complete subtrees, given as (level, index) pairs, in the order asked.
# A batch, so a database-backed reader can fetch them in one query.
NodeReader = Callable[[Sequence[tuple[int, int]]], Sequence[bytes]]


class ProofError(ValueError):
    """An inclusion or consistency proof (or its parameters) does not verify."""


def leaf_hash(entry: bytes) -> bytes:
    """RFC 9162 2.1.1: MTH({d(0)}) = SHA-256(0x00 || d(0))."""
    return hashlib.sha256(_LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 2.1.1: SHA-256(0x01 || MTH(left) || MTH(right))."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def _pair_level(hashes: Sequence[bytes]) -> list[bytes]:
    """Hash adjacent pairs; an odd last hash is dropped (it is not a complete subtree)."""
    sha256 = hashlib.sha256
    # A comprehension over zip keeps the per-node cost to one C-level hash call.
    return [
        sha256(_NODE_PREFIX + left + right).digest()
        for left, right in zip(hashes[0::2], hashes[1::2], strict=False)
    ]


def complete_levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    """All complete-subtree hashes: `levels[l][i]` is node (l, i). levels[0] is the leaves.

    The list ends at the highest level that has at least one complete subtree.
    """
    levels: list[list[bytes]] = [list(leaf_hashes)]
    while len(levels[-1]) >= 2:
        levels.append(_pair_level(levels[-1]))
    return levels


class LevelBuilder:
    """`complete_levels` built up as the leaf hashes arrive, `block` (a power of two) at a time.

    Each `add` of one block's leaf hashes (leaves from a multiple of `block`; only the last
    block may be shorter) hashes at once the complete subtrees inside it, up to the block's
    own height; `levels` then pairs upwards from there. The result is exactly
    `complete_levels` of all the leaves. A verifier fetching a log tile by tile uses it to hash
    each tile while the next ones are still on their way, instead of all at the end.
    """

    def __init__(self, block: int) -> None:
        if block < 1 or block & (block - 1):
            raise ValueError(f"block must be a power of two, not {block}")
        self.block = block
        self._height = block.bit_length() - 1
        self._levels: list[list[bytes]] = [[] for _ in range(self._height + 1)]
        self._closed = False

    @property
    def leaf_hashes(self) -> list[bytes]:
        return self._levels[0]

    def add(self, leaf_hashes: Sequence[bytes]) -> None:
        if self._closed:
            raise ValueError("a block shorter than the block size must be the last one")
        if len(leaf_hashes) > self.block:
            raise ValueError(f"{len(leaf_hashes)} leaves is more than a block ({self.block})")
        current = list(leaf_hashes)
        self._levels[0].extend(current)
        for level in range(1, self._height + 1):
            current = _pair_level(current)
            self._levels[level].extend(current)
        self._closed = len(leaf_hashes) < self.block

    def levels(self) -> list[list[bytes]]:
        """All complete-subtree hashes so far, as `complete_levels` returns them."""
        levels = [self._levels[0]]
        while len(levels[-1]) >= 2:
            above = len(levels)
            levels.append(self._levels[above] if above <= self._height else _pair_level(levels[-1]))
        return levels


def subtree_nodes(start: int, end: int) -> list[tuple[int, int]]:
    """Decompose leaves [start, end) into maximal complete subtrees, left to right.

    Every range that RFC 6962's recursion produces starts at a multiple of a power of two at
    least as large as itself, so greedy largest-aligned-power decomposition is exact, and
    MTH(range) is these nodes folded from the right with `node_hash`.
    """
    if not 0 <= start < end:
        raise ValueError(f"empty or negative leaf range [{start}, {end})")
    nodes: list[tuple[int, int]] = []
    while start < end:
        size = end - start
        level = size.bit_length() - 1
        # Shrink until the subtree is aligned at `start`.
        while start % (1 << level):
            level -= 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """Combine subtree hashes of a range (from `subtree_nodes`) into the range's MTH."""
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def root_from_levels(levels: Sequence[Sequence[bytes]], size: int) -> bytes:
    """MTH of the first `size` leaves, from complete-subtree hashes (see `complete_levels`)."""
    if size == 0:
        return EMPTY_ROOT
    return fold_right([levels[level][index] for level, index in subtree_nodes(0, size)])


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) for any n, from the leaf hashes (RFC 9162 2.1.1)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    return root_from_levels(complete_levels(leaf_hashes), len(leaf_hashes))


def levels_reader(levels: Sequence[Sequence[bytes]]) -> NodeReader:
    """A `NodeReader` over in-memory complete-subtree hashes."""

    def read(nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        return [levels[level][index] for level, index in nodes]

    return read


def tree_root(size: int, read_nodes: NodeReader) -> bytes:
    """MTH of the first `size` leaves, reading at most log2(size) stored nodes."""
    if size == 0:
        return EMPTY_ROOT
    return fold_right(list(read_nodes(subtree_nodes(0, size))))


def append_leaves(
    start: int, leaf_hashes: Sequence[bytes], read_nodes: NodeReader
) -> list[tuple[int, int, bytes]]:
    """The complete-subtree nodes (level, index, hash) created by appending `leaf_hashes`
    as leaves start, start+1, ... to a tree of `start` leaves.

    A store that keeps every complete-subtree node can then answer any proof or root with
    `NodeReader` reads. Older nodes needed as left siblings are read in one batch: at most
    one per level.
    """
    end = start + len(leaf_hashes)
    new: dict[tuple[int, int], bytes] = {
        (0, start + offset): leaf for offset, leaf in enumerate(leaf_hashes)
    }
    plan: list[tuple[int, int]] = []
    level = 1
    while (1 << level) <= end:
        # Nodes completed by the append: their last leaf is in [start, end).
        plan.extend((level, index) for index in range(start >> level, end >> level))
        level += 1
    planned = set(plan)
    old = sorted(
        {
            (lvl - 1, child)
            for lvl, index in plan
            for child in (2 * index, 2 * index + 1)
            if (lvl - 1, child) not in new and (lvl - 1, child) not in planned
        }
    )
    known = dict(zip(old, read_nodes(old), strict=True)) if old else {}
    known.update(new)
    created = [(0, start + offset, leaf) for offset, leaf in enumerate(leaf_hashes)]
    for lvl, index in plan:  # bottom-up: plan is ordered by level
        value = node_hash(known[(lvl - 1, 2 * index)], known[(lvl - 1, 2 * index + 1)])
        known[(lvl, index)] = value
        created.append((lvl, index, value))
    return created


def _largest_power_of_two_below(n: int) -> int:
    """k such that k < n <= 2k (RFC 9162 2.1.1), for n > 1."""
    return 1 << ((n - 1).bit_length() - 1)


def _inclusion_ranges(index: int, start: int, end: int) -> list[tuple[int, int]]:
    """RFC 9162 2.1.3.1 PATH(m, D[start:end]) as leaf ranges, leaf-side first."""
    ranges: list[tuple[int, int]] = []
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if index - start < k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def _consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """RFC 9162 2.1.4.1 SUBPROOF(m, D[n], true) as leaf ranges, in proof order."""
    ranges: list[tuple[int, int]] = []
    start, end, m, complete = 0, size2, size1, True
    while m != end - start:
        k = _largest_power_of_two_below(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            complete = False
    if not complete:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def _hash_ranges(ranges: Sequence[tuple[int, int]], read_nodes: NodeReader) -> list[bytes]:
    plans = [subtree_nodes(start, end) for start, end in ranges]
    wanted = sorted({node for plan in plans for node in plan})
    fetched = read_nodes(wanted)
    if len(fetched) != len(wanted):
        raise ValueError(f"node reader returned {len(fetched)} hashes for {len(wanted)} nodes")
    by_node = dict(zip(wanted, fetched, strict=True))
    return [fold_right([by_node[node] for node in plan]) for plan in plans]


def inclusion_proof(index: int, size: int, read_nodes: NodeReader) -> list[bytes]:
    """The audit path for leaf `index` in the tree of `size` leaves (RFC 9162 2.1.3.1)."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    return _hash_ranges(_inclusion_ranges(index, 0, size), read_nodes)


def consistency_proof(size1: int, size2: int, read_nodes: NodeReader) -> list[bytes]:
    """The proof that the tree of `size1` leaves is a prefix of the one of `size2`
    (RFC 9162 2.1.4.1). Empty when the sizes are equal."""
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    return _hash_ranges(_consistency_ranges(size1, size2), read_nodes)


def _check_node_sizes(proof: Sequence[bytes]) -> None:
    for position, node in enumerate(proof):
        if len(node) != HASH_SIZE:
            raise ProofError(f"proof node {position} is {len(node)} bytes, not {HASH_SIZE}")


def root_from_inclusion_proof(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """RFC 9162 2.1.3.2 steps 1-5, returning the computed root instead of comparing it."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    if len(leaf) != HASH_SIZE:
        raise ProofError(f"leaf hash is {len(leaf)} bytes, not {HASH_SIZE}")
    _check_node_sizes(proof)
    fn, sn = index, size - 1
    result = leaf
    for sibling in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            result = node_hash(sibling, result)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            result = node_hash(result, sibling)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    return result


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Check that `leaf` is at `index` in the tree of `size` leaves with root `root_hash`."""
    if root_from_inclusion_proof(index, size, leaf, proof) != root_hash:
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the tree's root")


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (size1, root1) is a prefix of the tree (size2, root2)
    (RFC 9162 2.1.4.2). An empty old tree is rejected: there is nothing to be consistent with,
    and accepting it would let any proof pass."""
    if size1 <= 0 or size2 < size1:
        raise ProofError(f"no consistency between sizes {size1} and {size2}")
    if size1 == size2:
        if proof:
            raise ProofError("consistency proof between equal sizes must be empty")
        if root1 != root2:
            raise ProofError(f"two different roots for the same size {size1}")
        return
    # Step 1: an empty proof can only relate equal trees.
    if not proof:
        raise ProofError("empty consistency proof between different sizes")
    _check_node_sizes(proof)
    path = list(proof)
    # Step 2: when the old tree is a complete subtree, its root is the proof's first node.
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    # Steps 3-4.
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # Step 5.
    fr = sr = path[0]
    # Step 6.
    for node in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = node_hash(node, fr)
            sr = node_hash(node, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, node)
        fn >>= 1
        sn >>= 1
    # Step 7.
    if sn != 0:
        raise ProofError("consistency proof is shorter than the tree is deep")
    if fr != root1:
        raise ProofError(f"consistency proof does not lead to the old root (size {size1})")
    if sr != root2:
        raise ProofError(f"consistency proof does not lead to the new root (size {size2})")
