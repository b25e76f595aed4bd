"""RFC 6962 roots and proofs against transcribed and derived vectors, plus property tests."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from porchlight.tlog import merkle
from porchlight.tlog.merkle import (
    EMPTY_ROOT,
    ProofError,
    append_leaves,
    complete_levels,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    levels_reader,
    root,
    tree_root,
    verify_consistency,
    verify_inclusion,
)
from tests.tlog.vectors import derived, transcribed

h = bytes.fromhex


def _reference_leaves() -> list[bytes]:
    return [leaf_hash(h(x)) for x in transcribed()["rfc6962_reference_tree"]["leaf_inputs_hex"]]


def test_reference_tree_roots_for_every_size() -> None:
    tree = transcribed()["rfc6962_reference_tree"]
    leaves = _reference_leaves()
    assert [x.hex() for x in leaves] == tree["node_hashes_by_level_hex"]["level0_leaf_hashes"]
    for size, want in tree["root_hash_by_tree_size_hex"].items():
        assert root(leaves[: int(size)]).hex() == want
    levels = complete_levels(leaves)
    for level in (1, 2, 3):
        assert [x.hex() for x in levels[level]] == tree["node_hashes_by_level_hex"][f"level{level}"]


def test_empty_root_is_sha256_of_nothing() -> None:
    roots = transcribed()["rfc6962_reference_tree"]["root_hash_by_tree_size_hex"]
    assert EMPTY_ROOT.hex() == roots["0"]
    assert root([]) == EMPTY_ROOT


def test_transcribed_inclusion_proofs_are_generated_and_verify() -> None:
    leaves = _reference_leaves()
    read = levels_reader(complete_levels(leaves[:8]))
    for case in transcribed()["rfc6962_inclusion_proofs"]["cases"]:
        index, size = case["leaf_index"], case["tree_size"]
        proof = [h(x) for x in case["proof_hex"]]
        assert inclusion_proof(index, size, read) == proof
        verify_inclusion(index, size, h(case["leaf_hash_hex"]), proof, h(case["root_hex"]))


def test_transcribed_consistency_proofs_are_generated_and_verify() -> None:
    read = levels_reader(complete_levels(_reference_leaves()))
    for case in transcribed()["rfc6962_consistency_proofs"]["cases"]:
        proof = [h(x) for x in case["proof_hex"]]
        assert consistency_proof(case["size1"], case["size2"], read) == proof
        verify_consistency(
            case["size1"], case["size2"], h(case["root1_hex"]), h(case["root2_hex"]), proof
        )


def test_rfc9162_section_2_1_5_example() -> None:
    example = derived()["rfc9162_section_2_1_5_example_concrete"]
    names = example["node_hashes_hex"]
    read = levels_reader(complete_levels(_reference_leaves()[:7]))
    for index, path in example["inclusion_paths_by_leaf_index"].items():
        assert [p.hex() for p in inclusion_proof(int(index), 7, read)] == [names[n] for n in path]
    for size1, path in example["consistency_proofs_to_size7_by_old_size"].items():
        assert [p.hex() for p in consistency_proof(int(size1), 7, read)] == [names[n] for n in path]
    assert root(_reference_leaves()[:7]).hex() == names["root"]


def test_tessera_log_roots_and_proofs() -> None:
    data = derived()["tessera_log_proofs"]
    entries = transcribed()["tessera_testdata_log"]["entries_in_order_ascii"]
    leaves = [leaf_hash(e.encode()) for e in entries]
    assert [x.hex() for x in leaves] == data["leaf_hashes_hex"]
    for size, want in data["root_b64_by_size"].items():
        assert base64.b64encode(root(leaves[: int(size)])).decode() == want
    read = levels_reader(complete_levels(leaves))
    for case in data["inclusion_in_size15"]:
        proof = inclusion_proof(case["leaf_index"], 15, read)
        assert [base64.b64encode(p).decode() for p in proof] == case["proof_b64"]
    for case in data["consistency"]:
        proof = consistency_proof(case["size1"], case["size2"], read)
        assert [base64.b64encode(p).decode() for p in proof] == case["proof_b64"]


def test_root_matches_the_recursive_definition() -> None:
    def mth(hashes: list[bytes]) -> bytes:
        if len(hashes) == 1:
            return hashes[0]
        k = 1 << ((len(hashes) - 1).bit_length() - 1)
        return merkle.node_hash(mth(hashes[:k]), mth(hashes[k:]))

    leaves = [leaf_hash(i.to_bytes(4, "big")) for i in range(300)]
    for size in range(1, 300):
        assert root(leaves[:size]) == mth(leaves[:size])


def test_bad_proof_parameters_raise() -> None:
    leaves = _reference_leaves()
    read = levels_reader(complete_levels(leaves))
    with pytest.raises(ValueError):
        inclusion_proof(8, 8, read)
    with pytest.raises(ValueError):
        consistency_proof(0, 8, read)
    with pytest.raises(ProofError):
        verify_consistency(0, 8, EMPTY_ROOT, root(leaves), [])


_LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(600)]
_LEVELS = complete_levels(_LEAVES)
_READ = levels_reader(_LEVELS)


@st.composite
def _index_and_size(draw: st.DrawFn) -> tuple[int, int]:
    size = draw(st.integers(min_value=1, max_value=len(_LEAVES)))
    return draw(st.integers(min_value=0, max_value=size - 1)), size


def _flip(data: bytes, bit: int) -> bytes:
    out = bytearray(data)
    out[bit // 8 % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


@settings(max_examples=300, deadline=None)
@given(_index_and_size(), st.integers(min_value=0))
def test_generated_inclusion_proofs_verify_and_tampered_ones_do_not(
    case: tuple[int, int], bit: int
) -> None:
    index, size = case
    proof = inclusion_proof(index, size, _READ)
    tree_root = merkle.root_from_levels(_LEVELS, size)
    verify_inclusion(index, size, _LEAVES[index], proof, tree_root)
    with pytest.raises(ProofError):
        verify_inclusion(index, size, _flip(_LEAVES[index], bit), proof, tree_root)
    with pytest.raises(ProofError):
        verify_inclusion(index, size, _LEAVES[index], proof, _flip(tree_root, bit))
    if proof:
        position = bit % len(proof)
        tampered = [*proof[:position], _flip(proof[position], bit), *proof[position + 1 :]]
        with pytest.raises(ProofError):
            verify_inclusion(index, size, _LEAVES[index], tampered, tree_root)
        with pytest.raises(ProofError):
            verify_inclusion(index, size, _LEAVES[index], proof[:-1], tree_root)
    with pytest.raises(ProofError):
        verify_inclusion(index, size, _LEAVES[index], [*proof, _LEAVES[0]], tree_root)
    if size > 1:
        other = (index + 1 + bit % (size - 1)) % size
        with pytest.raises(ProofError):
            verify_inclusion(other, size, _LEAVES[index], proof, tree_root)


@settings(max_examples=300, deadline=None)
@given(_index_and_size(), st.integers(min_value=0))
def test_generated_consistency_proofs_verify_and_tampered_ones_do_not(
    case: tuple[int, int], bit: int
) -> None:
    size1, size2 = case[0] + 1, case[1]
    root1 = merkle.root_from_levels(_LEVELS, size1)
    root2 = merkle.root_from_levels(_LEVELS, size2)
    proof = consistency_proof(size1, size2, _READ)
    verify_consistency(size1, size2, root1, root2, proof)
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, _flip(root1, bit), root2, proof)
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, root1, _flip(root2, bit), proof)
    if proof:
        position = bit % len(proof)
        tampered = [*proof[:position], _flip(proof[position], bit), *proof[position + 1 :]]
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, root1, root2, tampered)
        with pytest.raises(ProofError):
            verify_consistency(size1, size2, root1, root2, proof[:-1])
    with pytest.raises(ProofError):
        verify_consistency(size1, size2, root1, root2, [*proof, _LEAVES[0]])


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=70), min_size=1, max_size=8))
def test_appending_in_batches_stores_every_complete_subtree(batches: list[int]) -> None:
    stored: dict[tuple[int, int], bytes] = {}
    reads: list[int] = []

    def read(nodes: Sequence[tuple[int, int]]) -> list[bytes]:
        reads.append(len(nodes))
        return [stored[node] for node in nodes]

    size = 0
    for count in batches:
        for level, index, value in append_leaves(size, _LEAVES[size : size + count], read):
            assert (level, index) not in stored
            stored[level, index] = value
        size += count
        assert tree_root(size, read) == merkle.root_from_levels(_LEVELS, size)
    levels = complete_levels(_LEAVES[:size])
    assert stored == {(lv, i): h for lv, row in enumerate(levels) for i, h in enumerate(row)}
    # Appending reads at most one old left sibling per level.
    assert max(reads) <= size.bit_length()
