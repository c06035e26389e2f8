"""The offline verifier of an export (``broker.audit.export``): no database, only the file, checkpoints and keys.

What it checks, in order, failing on the first problem with a ``VerificationFailed`` naming it:

1. the checkpoint is a signed note by the trusted log key (signed-note, Ed25519) and parses
   (tlog-checkpoint); each required cosigner's ``cosignature/v1`` verifies on it;
2. the export is whole: every line complete JSON ending in a newline (a torn write fails), a header
   first, an end line last with the right count, leaf indices strictly increasing;
3. it is cut at that checkpoint: not fewer leaves than the checkpoint covers (tail truncation);
4. whole log: every leaf index present in order, every entry re-hashed (RFC 9162 §2.1.1 leaf data
   = canonical JSON of the entry), the root recomputed and equal to the signed one (§2.1.1); a
   partner slice: only that partner's records, each leaf's inclusion proof verified (§2.1.3.2);
5. each earlier checkpoint (signed by the same key) is a prefix of this one: its root recomputed
   from the leaves when the export holds them, else the export's consistency proof (§2.1.4.2).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.audit.errors import BadSignature, InvalidProof, MalformedExport, RootMismatch
from broker.audit.log import leaf_data
from broker.audit.merkle import CompactRange, hash_leaf, verify_consistency, verify_inclusion
from broker.audit.note import Checkpoint, VerifierKey, open_note, split_note, verify_cosignature

__all__ = ["Report", "read_checkpoint", "verify_export", "verify_record"]

FORMAT = "entente-audit-export/v1"


@dataclass
class Report:
    """What was verified."""

    origin: str
    tree_size: int
    start: int
    partner: str | None
    leaves: int
    signature_checked: bool
    earlier: list[int] = field(default_factory=list)
    cosigners: list[str] = field(default_factory=list)


def read_checkpoint(note: str, key: VerifierKey | None) -> Checkpoint:
    """A checkpoint from a signed note; its signature is checked when ``key`` is given."""
    text = open_note(note, key) if key is not None else split_note(note)[0]
    return Checkpoint.parse(text)


def verify_record(
    entry: dict[str, Any], *, leaf_index: int, proof: Sequence[bytes], checkpoint_note: str, log_key: VerifierKey
) -> Checkpoint:
    """One record against a signed checkpoint, as ``verify_export`` checks each record of a partner slice:
    the note's signature by ``log_key``, then the entry re-hashed (§2.1.1) and its inclusion proof (§2.1.3.2)
    recomputed to the signed root. Returns the checkpoint; raises ``VerificationFailed`` naming what failed."""
    checkpoint = read_checkpoint(checkpoint_note, log_key)
    if leaf_index >= checkpoint.tree_size:
        raise InvalidProof(f"leaf {leaf_index} is beyond the checkpoint's {checkpoint.tree_size} leaves")
    try:
        verify_inclusion(leaf_index, checkpoint.tree_size, hash_leaf(leaf_data(entry)), proof, checkpoint.root_hash)
    except InvalidProof as exc:
        raise InvalidProof(f"leaf {leaf_index} is not in the signed tree ({exc.detail})") from exc
    return checkpoint


def _decode(values: Any, where: str) -> list[bytes]:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise MalformedExport(f"{where}: expected a list of base64 hashes")
    try:
        return [base64.b64decode(v, validate=True) for v in values]
    except (binascii.Error, ValueError) as exc:
        raise MalformedExport(f"{where}: not base64") from exc


def _objects(lines: Iterable[str]) -> Iterable[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        if not line.endswith("\n"):
            raise MalformedExport(f"line {number} is cut short (no newline): a torn write")
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            raise MalformedExport(f"line {number} is not complete JSON: a torn or edited line") from exc
        if not isinstance(value, dict) or value.get("kind") not in ("header", "leaf", "end"):
            raise MalformedExport(f"line {number} is not a header, leaf or end line")
        yield number, value


def _leaf_hash(number: int, value: dict[str, Any]) -> tuple[int, bytes]:
    index, entry = value.get("leaf_index"), value.get("entry")
    if not isinstance(index, int) or not isinstance(entry, dict):
        raise MalformedExport(f"line {number}: a leaf line has an integer leaf_index and an entry object")
    return index, hash_leaf(leaf_data(entry))


def verify_export(
    lines: Iterable[str],
    *,
    checkpoint_note: str,
    log_key: VerifierKey | None,
    earlier_notes: Sequence[str] = (),
    cosigner_keys: Sequence[VerifierKey] = (),
) -> Report:
    """Verify an export against a checkpoint (and earlier checkpoints); raises VerificationFailed."""
    checkpoint = read_checkpoint(checkpoint_note, log_key)
    text = split_note(checkpoint_note)[0]
    for cosigner in cosigner_keys:
        found = [s for s in split_note(checkpoint_note)[1] if (s.name, s.key_id) == (cosigner.name, cosigner.key_id)]
        if not found:
            raise BadSignature(f"the checkpoint carries no cosignature by {cosigner.name}")
        verify_cosignature(text, found[0], cosigner)
    earlier = sorted((read_checkpoint(n, log_key) for n in earlier_notes), key=lambda c: c.tree_size)
    for old in earlier:
        if old.origin != checkpoint.origin:
            raise BadSignature(f"earlier checkpoint of {old.origin!r} is another log than {checkpoint.origin!r}")
        if old.tree_size > checkpoint.tree_size:
            raise RootMismatch(
                f"an earlier checkpoint covers {old.tree_size} leaves, this one only {checkpoint.tree_size}: "
                "the log was truncated or forked"
            )

    objects = iter(_objects(lines))
    first = next(objects, None)
    if first is None or first[1]["kind"] != "header" or first[1].get("format") != FORMAT:
        raise MalformedExport(f"the export does not start with a {FORMAT} header line")
    header = first[1]
    size, start, partner_id = header.get("tree_size"), header.get("start"), header.get("partner_id")
    if not isinstance(size, int) or not isinstance(start, int) or not 0 <= start <= size:
        raise MalformedExport("the header's tree_size and start are not leaf counts")
    if size < checkpoint.tree_size:
        raise MalformedExport(
            f"the export stops at {size} leaves but the checkpoint covers {checkpoint.tree_size}: tail truncated"
        )
    if size > checkpoint.tree_size:
        raise MalformedExport(f"the export is cut at {size} leaves; verify it with the checkpoint of that size")

    edge = None if partner_id else CompactRange.of(start, _decode(header.get("prefix", []), "header prefix"))
    wanted = {c.tree_size for c in earlier if edge is not None and c.tree_size >= start}
    roots = {start: edge.root()} if edge is not None and start in wanted else {}
    count, last, ended = 0, -1, False
    for number, value in objects:
        if ended:
            raise MalformedExport(f"line {number} follows the end line")
        if value["kind"] == "end":
            if value.get("leaves") != count:
                raise MalformedExport(f"the end line counts {value.get('leaves')} leaves, the export holds {count}")
            ended = True
            continue
        if value["kind"] != "leaf":
            raise MalformedExport(f"line {number}: a second header")
        index, leaf_hash = _leaf_hash(number, value)
        if index <= last:
            raise MalformedExport(f"line {number}: leaf {index} comes after leaf {last}: records were reordered")
        if index >= size:
            raise MalformedExport(f"line {number}: leaf {index} is beyond the checkpoint's {size} leaves")
        last, count = index, count + 1
        if edge is None:
            if value["entry"].get("partner_id") != partner_id:
                raise MalformedExport(f"line {number}: leaf {index} is not a record of this partner")
            proof = _decode(value.get("proof"), f"line {number} proof")
            try:
                verify_inclusion(index, size, leaf_hash, proof, checkpoint.root_hash)
            except InvalidProof as exc:
                raise InvalidProof(f"line {number}: leaf {index} is not in the signed tree ({exc.detail})") from exc
            continue
        if index != edge.size:
            raise MalformedExport(
                f"line {number}: leaf {edge.size} is missing (found {index}): records were removed or reordered"
            )
        edge.append(leaf_hash)
        if edge.size in wanted:
            roots[edge.size] = edge.root()
    if not ended:
        raise MalformedExport("the export has no end line: it was cut short (torn write or truncation)")
    if edge is not None:
        if edge.size != size:
            raise MalformedExport(
                f"the export holds leaves up to {edge.size} but the checkpoint covers {size}: "
                "records are missing (removed, or the tail truncated)"
            )
        if edge.root() != checkpoint.root_hash:
            raise RootMismatch(
                "the root recomputed from the export differs from the signed one: "
                "a record was edited, inserted, removed or reordered"
            )

    proofs = header.get("consistency") or {}
    for old in earlier:
        if old.tree_size in roots:
            if roots[old.tree_size] != old.root_hash:
                raise RootMismatch(
                    f"the log's first {old.tree_size} records differ from the earlier checkpoint of that size: "
                    "history was rewritten"
                )
            continue
        if str(old.tree_size) not in proofs:
            raise MalformedExport(f"no consistency proof from {old.tree_size} leaves: export with --prove-from")
        proof = _decode(proofs[str(old.tree_size)], f"consistency proof from {old.tree_size}")
        try:
            verify_consistency(old.tree_size, size, proof, old.root_hash, checkpoint.root_hash)
        except InvalidProof as exc:
            raise InvalidProof(
                f"the checkpoint does not extend the earlier one of {old.tree_size} leaves: history was rewritten "
                f"({exc.detail})"
            ) from exc
    return Report(
        origin=checkpoint.origin,
        tree_size=size,
        start=start,
        partner=header.get("partner"),
        leaves=count,
        signature_checked=log_key is not None,
        earlier=[c.tree_size for c in earlier],
        cosigners=[k.name for k in cosigner_keys],
    )
