"""Tile paths, bundles and tiles (c2sp.org/tlog-tiles), and proofs read from tiles."""

from __future__ import annotations

import pytest

from porchlight.tlog.merkle import (
    complete_levels,
    consistency_proof,
    inclusion_proof,
    levels_reader,
)
from porchlight.tlog.tiles import (
    Tile,
    TileError,
    build_tiles,
    decode_bundle,
    encode_bundle,
    encode_index,
    leaf_hashes,
    level_width,
    parse_tile_path,
    tile_from_nodes,
    tile_levels,
    tile_node_reader,
    tiles_at_level,
)
from tests.testdata import require_testdata
from tests.tlog.logs import entry
from tests.tlog.vectors import transcribed


def test_index_encoding_and_paths() -> None:
    math = transcribed()["tlog_tiles_math"]
    example = math["index_path_encoding_example"]
    assert encode_index(example["N"]) == example["path_element"]
    assert encode_index(5) == "005"
    assert encode_index(1000) == "x001/000"
    assert Tile(0, 1234067).path() == "tile/0/x001/x234/067"
    assert Tile(2, 3, 17).path() == "tile/2/003.p/17"
    assert Tile(None, 0, 15).path() == "tile/entries/000.p/15"
    for path in ("tile/0/x001/x234/067", "tile/2/003.p/17", "tile/entries/000.p/15"):
        assert parse_tile_path(path).path() == path


def test_go_tile_paths_translate_to_c2sp() -> None:
    # Go sumdb paths carry the height (tile/H/L/N); drop it and they are C2SP paths at H=8.
    for case in transcribed()["go_sumdb_tlog"]["go_tile_paths_tile_H_L_N"]:
        if case["L"] < 0:
            continue
        go_path = case["path"]
        c2sp_path = "tile/" + go_path.split("/", 2)[2]
        if case["N"] * 256 ** (case["L"] + 1) > 2**63 - 1:
            # Fine at the Go vector's height, but at height 8 its first leaf would be past
            # the 2**63 - 1 entries a log can hold.
            with pytest.raises(TileError, match="beyond any log"):
                parse_tile_path(c2sp_path)
            continue
        tile = parse_tile_path(c2sp_path)
        assert (tile.level, tile.index) == (case["L"], case["N"])


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/5",
        "tile/0/x000/005",
        "tile/00/005",
        "tile/0/005.p/0",
        "tile/0/005.p/256",
        "tile/0/005.p/07",
        "tile/-1/005",
        "tile/data/005",
        "tile/3/5/123/456/078",
        "/tile/0/005",
        # tlog-tiles: the level is 0..63.
        "tile/64/000",
        "tile/99999999999999999999/000",
        # Tiles only a log of more than 2**63 - 1 entries could have.
        "tile/0/x999/x999/x999/x999/x999/x999/x999/000",
        "tile/entries/x036/x028/x797/x018/x963/968",
        "tile/entries/x036/x028/x797/x018/x963/967",
        "tile/1/x140/x737/x488/x355/327",
        "tile/8/000.p/1",
        "tile/63/000",
    ],
)
def test_bad_tile_paths_are_rejected(path: str) -> None:
    with pytest.raises(TileError):
        parse_tile_path(path)


def test_the_last_tiles_a_log_can_have_are_accepted() -> None:
    # A log of 2**63 - 1 entries: its last bundle and tiles end exactly at that size.
    last = (2**63 - 1) // 256
    for tile in (Tile(None, last, 255), Tile(0, last, 255), Tile(None, last - 1), Tile(7, 0, 127)):
        assert parse_tile_path(tile.path()) == tile


def test_size_70000_example() -> None:
    example = transcribed()["tlog_tiles_math"]["example_size_70000"]
    level0 = list(tiles_at_level(70000, 0))
    assert sum(t.width == 256 for t in level0) == example["level0_full_tiles"]
    assert level0[-1].width == example["level0_partial_width"]
    level1 = list(tiles_at_level(70000, 1))
    assert sum(t.width == 256 for t in level1) == example["level1_full_tiles"]
    assert level1[-1].width == example["level1_partial_width"]
    assert [t.width for t in tiles_at_level(70000, 2)] == [example["level2_partial_width"]]
    assert list(tile_levels(70000)) == [0, 1, 2]
    assert [t.path() for t in tiles_at_level(256, 1)] == ["tile/1/000.p/1"]
    assert level_width(256, 0) == 256


def test_bundles_round_trip_and_reject_truncation() -> None:
    entries = [b"", b"one", bytes(300), bytes(0xFFFF)]
    data = encode_bundle(entries)
    assert decode_bundle(data) == entries
    for cut in (1, 3, len(data) - 1):
        with pytest.raises(TileError):
            decode_bundle(data[:cut])
    with pytest.raises(TileError):
        encode_bundle([bytes(0x10000)])


def test_tessera_tiles_and_bundles_are_reproduced(tessera_dir_entries: list[bytes]) -> None:
    files = build_tiles(tessera_dir_entries)
    assert set(files) == {"tile/0/000.p/15", "tile/entries/000.p/15"}
    for path, data in files.items():
        assert (require_testdata("tlog", "tessera-testdata-log", path)).read_bytes() == data


def test_proofs_from_tiles_match_proofs_from_memory() -> None:
    entries = [entry(i) for i in range(70_000 // 50)]
    size = len(entries)
    files = build_tiles(entries)
    reader = tile_node_reader(lambda tile: files[tile.path()], size)
    memory = levels_reader(complete_levels(leaf_hashes(entries)))
    for index in (0, 1, 255, 256, 511, 1000, size - 1):
        assert inclusion_proof(index, size, reader) == inclusion_proof(index, size, memory)
    for size1 in (1, 7, 256, 257, 1024, size - 1):
        assert consistency_proof(size1, size, reader) == consistency_proof(size1, size, memory)
    for path, data in files.items():
        tile = parse_tile_path(path)
        if tile.level is not None:
            assert tile_from_nodes(tile, memory) == data


@pytest.fixture
def tessera_dir_entries() -> list[bytes]:
    return [e.encode() for e in transcribed()["tessera_testdata_log"]["entries_in_order_ascii"]]
