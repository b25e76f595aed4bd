"""`porchlight.tlog.merkle.LevelBuilder`: the tree's levels hashed block by block, as a verifier
receives tiles, are exactly `complete_levels` of all the leaves."""

from __future__ import annotations

import hashlib

import pytest

from porchlight.tlog.merkle import LevelBuilder, complete_levels, root, root_from_levels


def _leaves(count: int) -> list[bytes]:
    return [hashlib.sha256(b"\x00" + index.to_bytes(4, "big")).digest() for index in range(count)]


@pytest.mark.parametrize("block", [1, 2, 4, 256])
def test_levels_built_block_by_block_are_complete_levels(block: int) -> None:
    leaves = _leaves(1100)
    for size in [*range(0, 70), 255, 256, 257, 511, 512, 513, 767, 768, 1023, 1024, 1025, 1100]:
        builder = LevelBuilder(block)
        for start in range(0, size, block):
            builder.add(leaves[start : min(size, start + block)])
        levels = builder.levels()
        assert levels == complete_levels(leaves[:size]), (block, size)
        assert root_from_levels(levels, size) == root(leaves[:size])


def test_only_whole_blocks_then_at_most_one_short_one() -> None:
    with pytest.raises(ValueError, match="power of two"):
        LevelBuilder(6)
    builder = LevelBuilder(4)
    with pytest.raises(ValueError, match="more than a block"):
        builder.add(_leaves(5))
    builder.add(_leaves(4))
    builder.add(_leaves(3))
    with pytest.raises(ValueError, match="must be the last"):
        builder.add(_leaves(4))
    assert builder.levels() == complete_levels(_leaves(4) + _leaves(3))
