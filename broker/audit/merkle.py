"""RFC 9162 §2.1 Merkle Tree Hash, inclusion proofs (§2.1.3) and consistency proofs (§2.1.4), over bytes.

Pure functions, no I/O. A proof is planned as a list of leaf ranges (§2.1.3.1 PATH, §2.1.4.1
SUBPROOF); each range's hash is the fold of a few *complete* subtrees (``Node``), which a log can
store once and never change. So a log holding every complete subtree's hash answers any proof
with O(log n) lookups (``inclusion_plan``/``consistency_plan`` + ``assemble``), and the in-memory
helpers (``root_hash``, ``inclusion_proof``, ``consistency_proof``) run the very same plans over a
list of leaf hashes. Verification follows §2.1.3.2 and §2.1.4.2 step by step.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from broker.audit.errors import InvalidProof, OutOfRange

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "Node",
    "assemble",
    "consistency_plan",
    "consistency_proof",
    "consistency_ranges",
    "hash_children",
    "hash_leaf",
    "inclusion_plan",
    "inclusion_proof",
    "inclusion_ranges",
    "root_from_inclusion_proof",
    "root_hash",
    "subtree_nodes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""§2.1.1: the hash of an empty list is the hash of an empty string."""


def hash_leaf(data: bytes) -> bytes:
    """§2.1.1 leaf hash: SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """§2.1.1 interior node: SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


@dataclass(frozen=True, order=True)
class Node:
    """A complete subtree: the ``2**level`` leaves from ``index * 2**level``. Level 0 is a leaf."""

    level: int
    index: int

    @property
    def start(self) -> int:
        return self.index << self.level

    @property
    def end(self) -> int:
        return (self.index + 1) << self.level


def _split(n: int) -> int:
    """§2.1.1 k: the largest power of two smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_nodes(start: int, end: int) -> list[Node]:
    """The complete subtrees, left to right, whose fold is MTH(D[start:end]).

    Valid for every range §2.1 recursion produces (``start`` a multiple of a power of two at least
    ``end - start``), which includes [0, n): one node per set bit of the range's size.
    """
    nodes: list[Node] = []
    size, position = end - start, start
    for level in reversed(range(size.bit_length())):
        if size >> level & 1:
            nodes.append(Node(level, position >> level))
            position += 1 << level
    return nodes


def _fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of adjacent complete subtrees, largest first: they nest to the right (§2.1.1)."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = hash_children(left, result)
    return result


def inclusion_ranges(leaf_index: int, tree_size: int) -> list[tuple[int, int]]:
    """§2.1.3.1 PATH(m, D[n]) as leaf ranges, deepest sibling first."""
    if not 0 <= leaf_index < tree_size:
        raise OutOfRange(f"leaf {leaf_index} is not in a tree of {tree_size} leaves")
    ranges: list[tuple[int, int]] = []
    low, high = 0, tree_size
    while high - low > 1:
        k = _split(high - low)
        if leaf_index < low + k:
            ranges.append((low + k, high))
            high = low + k
        else:
            ranges.append((low, low + k))
            low += k
    return ranges[::-1]


def consistency_ranges(first: int, second: int) -> list[tuple[int, int]]:
    """§2.1.4.1 PROOF(m, D[n]) = SUBPROOF(m, D[n], true) as leaf ranges; empty if m is 0 or n."""
    if not 0 <= first <= second:
        raise OutOfRange(f"no consistency proof from {first} leaves to {second}")
    if first in (0, second):
        return []
    ranges: list[tuple[int, int]] = []
    low, high, m, complete = 0, second, first, True
    while high - low != m:
        k = _split(high - low)
        if m <= k:
            ranges.append((low + k, high))
            high = low + k
        else:
            ranges.append((low, low + k))
            low, m, complete = low + k, m - k, False
    if not complete:
        ranges.append((low, high))
    return ranges[::-1]


Plan = list[list[Node]]
"""One entry per proof element: the complete subtrees whose fold is that element."""


def inclusion_plan(leaf_index: int, tree_size: int) -> Plan:
    return [subtree_nodes(a, b) for a, b in inclusion_ranges(leaf_index, tree_size)]


def consistency_plan(first: int, second: int) -> Plan:
    return [subtree_nodes(a, b) for a, b in consistency_ranges(first, second)]


def assemble(plan: Plan, hashes: Mapping[Node, bytes]) -> list[bytes]:
    """The proof a plan describes, from stored complete-subtree hashes (KeyError if one is missing)."""
    return [_fold([hashes[node] for node in nodes]) for nodes in plan]


def _node_hash(leaf_hashes: Sequence[bytes], node: Node) -> bytes:
    return _range_hash(leaf_hashes, node.start, node.end)


def _range_hash(leaf_hashes: Sequence[bytes], start: int, end: int) -> bytes:
    """MTH(D[start:end]) recomputed from leaf hashes (§2.1.1), O(end - start)."""
    if end - start == 1:
        return leaf_hashes[start]
    if end == start:
        return EMPTY_ROOT
    k = _split(end - start)
    return hash_children(_range_hash(leaf_hashes, start, start + k), _range_hash(leaf_hashes, start + k, end))


def root_hash(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over a whole list of leaf hashes (§2.1.1)."""
    return _range_hash(leaf_hashes, 0, len(leaf_hashes))


def inclusion_proof(leaf_hashes: Sequence[bytes], leaf_index: int) -> list[bytes]:
    """§2.1.3.1 PATH for a tree held in memory (every leaf hash, in order)."""
    plan = inclusion_plan(leaf_index, len(leaf_hashes))
    return assemble(plan, {n: _node_hash(leaf_hashes, n) for nodes in plan for n in nodes})


def consistency_proof(leaf_hashes: Sequence[bytes], first: int) -> list[bytes]:
    """§2.1.4.1 PROOF(first, D[n]) for a tree held in memory."""
    plan = consistency_plan(first, len(leaf_hashes))
    return assemble(plan, {n: _node_hash(leaf_hashes, n) for nodes in plan for n in nodes})


def _check_hashes(what: str, values: Sequence[bytes]) -> None:
    for value in values:
        if len(value) != HASH_SIZE:
            raise InvalidProof(f"{what} holds a {len(value)}-byte value where a {HASH_SIZE}-byte hash belongs")


def root_from_inclusion_proof(leaf_index: int, tree_size: int, leaf_hash: bytes, proof: Sequence[bytes]) -> bytes:
    """§2.1.3.2 steps 1-5: the root the proof leads to, or InvalidProof if its shape is wrong."""
    _check_hashes("the inclusion proof", [leaf_hash, *proof])
    if leaf_index >= tree_size:
        raise InvalidProof(f"leaf {leaf_index} cannot be in a tree of {tree_size} leaves")
    fn, sn, r = leaf_index, tree_size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise InvalidProof("the inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = hash_children(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = hash_children(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise InvalidProof("the inclusion proof is shorter than the path to the root")
    return r


def verify_inclusion(leaf_index: int, tree_size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes) -> None:
    """§2.1.3.2: the leaf is at ``leaf_index`` in the tree of ``tree_size`` leaves whose root is ``root``."""
    if root_from_inclusion_proof(leaf_index, tree_size, leaf_hash, proof) != root:
        raise InvalidProof(f"leaf {leaf_index} is not in the tree of {tree_size} leaves with that root")


def verify_consistency(first: int, second: int, proof: Sequence[bytes], first_root: bytes, second_root: bytes) -> None:
    """§2.1.4.2: the tree of ``second`` leaves with ``second_root`` extends the one of ``first`` with ``first_root``.

    Equal sizes are consistent only with equal roots and an empty proof; an empty tree precedes
    every tree (with an empty proof).
    """
    _check_hashes("the consistency proof", [first_root, second_root, *proof])
    if first > second:
        raise InvalidProof(f"a tree of {second} leaves cannot extend one of {first}")
    if first == second or first == 0:
        if proof:
            raise InvalidProof("a consistency proof between these sizes must be empty")
        if first == second and first_root != second_root:
            raise InvalidProof(f"two different roots for the same tree size {first}")
        return
    if not proof:
        raise InvalidProof("the consistency proof is empty")
    path = [first_root, *proof] if first & (first - 1) == 0 else list(proof)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise InvalidProof("the consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr, sr = hash_children(c, fr), hash_children(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = hash_children(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0 or fr != first_root or sr != second_root:
        raise InvalidProof(f"the tree of {second} leaves does not extend the tree of {first} leaves with that root")


@dataclass
class CompactRange:
    """The right edge of a tree of ``size`` leaves: its complete subtrees (``subtree_nodes(0, size)``)
    with their hashes, left to right. Enough to append leaves and to compute the root (§2.1.1)."""

    size: int = 0
    nodes: list[tuple[Node, bytes]] = field(default_factory=list)

    @classmethod
    def of(cls, size: int, hashes: Sequence[bytes]) -> CompactRange:
        """Rebuild from the hashes of ``subtree_nodes(0, size)``, in that order."""
        nodes = subtree_nodes(0, size)
        if len(nodes) != len(hashes):
            raise InvalidProof(f"a tree of {size} leaves has {len(nodes)} edge subtrees, not {len(hashes)}")
        _check_hashes("the compact range", hashes)
        return cls(size, list(zip(nodes, hashes, strict=True)))

    def append(self, leaf_hash: bytes) -> list[tuple[Node, bytes]]:
        """Add the next leaf; returns the subtrees it completes (the leaf itself first), to be stored."""
        made = [(Node(0, self.size), leaf_hash)]
        self.nodes.append(made[0])
        self.size += 1
        while len(self.nodes) >= 2 and self.nodes[-1][0].level == self.nodes[-2][0].level:
            (left, left_hash), (_, right_hash) = self.nodes[-2], self.nodes[-1]
            parent = (Node(left.level + 1, left.index >> 1), hash_children(left_hash, right_hash))
            self.nodes[-2:] = [parent]
            made.append(parent)
        return made

    def root(self) -> bytes:
        return _fold([h for _, h in self.nodes])

    def hashes(self) -> list[bytes]:
        return [h for _, h in self.nodes]
