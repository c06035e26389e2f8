"""RFC 9162 §2.1 against the published transparency-dev vectors, and properties over random trees."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit.errors import InvalidProof, OutOfRange
from broker.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    Node,
    consistency_proof,
    hash_leaf,
    inclusion_proof,
    root_from_inclusion_proof,
    root_hash,
    subtree_nodes,
    verify_consistency,
    verify_inclusion,
)

DATA = Path(__file__).parent / "data" / "transparency-dev-merkle"
REFERENCE = json.loads((DATA / "reference.json").read_text())
LEAVES = [hash_leaf(bytes.fromhex(x)) for x in REFERENCE["leaf_inputs"]]
ROOTS = [bytes.fromhex(x) for x in REFERENCE["roots"]]


def _h(values: list[str]) -> list[bytes]:
    return [bytes.fromhex(v) for v in values]


@pytest.mark.parametrize("size", range(len(ROOTS)))
def test_root_of_each_size(size: int) -> None:
    assert root_hash(LEAVES[:size]) == ROOTS[size]
    edge = CompactRange()
    for leaf in LEAVES[:size]:
        edge.append(leaf)
    assert edge.root() == ROOTS[size]


def test_empty_tree_is_the_hash_of_nothing() -> None:
    assert root_hash([]) == EMPTY_ROOT == ROOTS[0]


def test_every_complete_subtree_hash() -> None:
    """The stored nodes a log keeps are exactly the reference's NodeHashes (level, index)."""
    edge, made = CompactRange(), {}
    for leaf in LEAVES:
        made.update(dict(edge.append(leaf)))
    expected = {
        Node(level, i): bytes.fromhex(h)
        for level, row in enumerate(REFERENCE["node_hashes"])
        for i, h in enumerate(row)
    }
    assert made == expected


@pytest.mark.parametrize("case", REFERENCE["inclusion"], ids=lambda c: f"{c['leaf_index']}:{c['tree_size']}")
def test_inclusion_vectors(case: dict[str, Any]) -> None:
    index, size = case["leaf_index"], case["tree_size"]
    proof = inclusion_proof(LEAVES[:size], index)
    assert proof == _h(case["proof"])
    verify_inclusion(index, size, LEAVES[index], proof, ROOTS[size])


@pytest.mark.parametrize("case", REFERENCE["consistency"], ids=lambda c: f"{c['first']}:{c['second']}")
def test_consistency_vectors(case: dict[str, Any]) -> None:
    first, second = case["first"], case["second"]
    proof = consistency_proof(LEAVES[:second], first)
    assert proof == _h(case["proof"])
    verify_consistency(first, second, proof, ROOTS[first], ROOTS[second])


def _b64(values: list[str] | None) -> list[bytes]:
    return [base64.b64decode(v) for v in values or []]


@pytest.mark.parametrize("path", sorted((DATA / "inclusion").glob("*.json")), ids=lambda p: p.stem)
def test_transparency_dev_inclusion_testdata(path: Path) -> None:
    case = json.loads(path.read_text())
    args = (case["leafIdx"], case["treeSize"], base64.b64decode(case["leafHash"]), _b64(case["proof"]))
    if case["wantErr"]:
        with pytest.raises(InvalidProof):
            verify_inclusion(*args, base64.b64decode(case["root"]))
    else:
        verify_inclusion(*args, base64.b64decode(case["root"]))


@pytest.mark.parametrize("path", sorted((DATA / "consistency").glob("*.json")), ids=lambda p: p.stem)
def test_transparency_dev_consistency_testdata(path: Path) -> None:
    case = json.loads(path.read_text())
    args = (case["size1"], case["size2"], _b64(case["proof"]), base64.b64decode(case["root1"]))
    if case["wantErr"]:
        with pytest.raises(InvalidProof):
            verify_consistency(*args, base64.b64decode(case["root2"]))
    else:
        verify_consistency(*args, base64.b64decode(case["root2"]))


@pytest.mark.parametrize(
    ("first", "second", "proof", "root1", "root2", "valid"),
    [  # transparency-dev proof/verify_test.go TestVerifyConsistency, with 32-byte stand-ins for "don't care"
        (0, 0, [], b"1" * 32, b"1" * 32, True),
        (0, 1, [], b"1" * 32, b"2" * 32, True),
        (1, 1, [], b"2" * 32, b"2" * 32, True),
        (1, 1, [], b"1" * 32, b"2" * 32, False),
        (1, 0, [], b"1" * 32, b"2" * 32, False),
        (2, 1, [], b"1" * 32, b"2" * 32, False),
        (1, 2, [], b"1" * 32, b"2" * 32, False),
        (0, 0, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT, False),
        (0, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT, False),
        (1, 1, [EMPTY_ROOT], EMPTY_ROOT, EMPTY_ROOT, False),
    ],
)
def test_consistency_edge_cases(
    first: int, second: int, proof: list[bytes], root1: bytes, root2: bytes, valid: bool
) -> None:
    if valid:
        verify_consistency(first, second, proof, root1, root2)
    else:
        with pytest.raises(InvalidProof):
            verify_consistency(first, second, proof, root1, root2)


def test_proofs_refuse_sizes_beyond_the_tree() -> None:
    with pytest.raises(OutOfRange):
        inclusion_proof(LEAVES[:3], 3)
    with pytest.raises(OutOfRange):
        consistency_proof(LEAVES[:3], 4)
    with pytest.raises(InvalidProof):
        root_from_inclusion_proof(5, 5, LEAVES[0], [])


def test_subtree_nodes_cover_the_range() -> None:
    assert subtree_nodes(0, 7) == [Node(2, 0), Node(1, 2), Node(0, 6)]
    assert subtree_nodes(8, 13) == [Node(2, 2), Node(0, 12)]
    assert subtree_nodes(0, 0) == []


def _flip(value: bytes, bit: int) -> bytes:
    index = (bit // 8) % len(value)
    return value[:index] + bytes([value[index] ^ (1 << (bit % 8))]) + value[index + 1 :]


trees = st.lists(st.binary(max_size=16), min_size=1, max_size=200).map(lambda data: [hash_leaf(d) for d in data])


@settings(max_examples=150, deadline=None)
@given(trees, st.data())
def test_every_inclusion_proof_verifies_and_any_bit_flip_fails(leaves: list[bytes], data: st.DataObject) -> None:
    size = len(leaves)
    index = data.draw(st.integers(0, size - 1))
    root, proof = root_hash(leaves), inclusion_proof(leaves, index)
    verify_inclusion(index, size, leaves[index], proof, root)
    bit = data.draw(st.integers(0, 255))
    target = data.draw(st.sampled_from(["leaf", "root", *(["proof"] if proof else [])]))
    if target == "leaf":
        bad = (_flip(leaves[index], bit), proof, root)
    elif target == "root":
        bad = (leaves[index], proof, _flip(root, bit))
    else:
        at = data.draw(st.integers(0, len(proof) - 1))
        bad = (leaves[index], [*proof[:at], _flip(proof[at], bit), *proof[at + 1 :]], root)
    with pytest.raises(InvalidProof):
        verify_inclusion(index, size, *bad)


@settings(max_examples=150, deadline=None)
@given(trees, st.data())
def test_every_consistency_proof_verifies_and_any_bit_flip_fails(leaves: list[bytes], data: st.DataObject) -> None:
    second = len(leaves)
    first = data.draw(st.integers(1, second))
    root1, root2 = root_hash(leaves[:first]), root_hash(leaves)
    proof = consistency_proof(leaves, first)
    verify_consistency(first, second, proof, root1, root2)
    bit = data.draw(st.integers(0, 255))
    target = data.draw(st.sampled_from(["root1", "root2", *(["proof"] if proof else [])]))
    if target == "root1":
        bad = (proof, _flip(root1, bit), root2)
    elif target == "root2":
        bad = (proof, root1, _flip(root2, bit))
    else:
        at = data.draw(st.integers(0, len(proof) - 1))
        bad = ([*proof[:at], _flip(proof[at], bit), *proof[at + 1 :]], root1, root2)
    with pytest.raises(InvalidProof):
        verify_consistency(first, second, *bad)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=16), min_size=1, max_size=200, unique=True), st.data())
def test_a_proof_for_one_position_fails_at_any_other(data_items: list[bytes], data: st.DataObject) -> None:
    """Among distinct leaves, a leaf cannot be claimed at another index (records moved or reordered)."""
    leaves = [hash_leaf(d) for d in data_items]
    size = len(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof, root = inclusion_proof(leaves, index), root_hash(leaves)
    other = data.draw(st.integers(0, 2 * size).filter(lambda i: i != index))
    with pytest.raises(InvalidProof):
        verify_inclusion(other, size, leaves[index], proof, root)
