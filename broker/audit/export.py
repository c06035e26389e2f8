"""JSON Lines export of the audit log (or of one partner's slice), cut at a signed checkpoint.

Format ``entente-audit-export/v1``, one JSON object per line, each line ending in a newline:

``{"kind": "header", ...}``
    ``format``, ``origin``, ``tree_size`` (the checkpoint the export is cut at), ``checkpoint`` (its
    note, with cosignatures), ``start`` (first leaf index exported), ``partner``/``partner_id``
    (``null`` for the whole log), ``prefix`` (whole log only: base64 hashes of the complete subtrees
    covering leaves [0, start), left to right, so a suffix still recomputes the root), and
    ``consistency`` (``{"<size>": [base64…]}``: RFC 9162 §2.1.4 proofs from earlier sizes asked for).
``{"kind": "leaf", "leaf_index": i, "record_id": id, "entry": {...}}``
    one per record, in leaf order; ``entry`` is ``record_entry``: its canonical JSON is the leaf
    data (RFC 9162 §2.1.1 leaf hash = SHA-256(0x00 || canonical JSON)). A partner slice adds
    ``proof``, the record's §2.1.3 inclusion proof (base64) at ``tree_size``.
``{"kind": "end", "leaves": n}``
    the number of leaf lines: a file without it is torn.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Engine, select
from sqlmodel import Session

from broker.audit.checkpoints import AuditCheckpoint, checkpoint_at, latest_checkpoint
from broker.audit.cosign import cosigned_note
from broker.audit.errors import NoSuchCheckpoint, OutOfRange
from broker.audit.log import AuditRecord, record_entry
from broker.audit.note import Checkpoint, split_note
from broker.audit.tree import AuditLeaf, compact_range, consistency_proof, inclusion_proofs
from broker.audit.verify import FORMAT

__all__ = ["FORMAT", "export_lines", "leaf_rows"]

_PAGE = 1000
_LEAVES = AuditLeaf.__table__  # type: ignore[attr-defined]
_RECORDS = AuditRecord.__table__  # type: ignore[attr-defined]


def _b64(values: Sequence[bytes]) -> list[str]:
    return [base64.b64encode(v).decode() for v in values]


def _line(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"


def leaf_rows(
    session: Session, *, start: int, end: int, partner_id: str | None = None, limit: int = _PAGE
) -> list[dict[str, Any]]:
    """Leaves in [start, end) (only ``partner_id``'s, if given), in order: index, record id, entry."""
    query = (
        select(_LEAVES.c.leaf_index, _RECORDS)
        .join(_RECORDS, _RECORDS.c.id == _LEAVES.c.record_id)
        .where(_LEAVES.c.leaf_index >= start, _LEAVES.c.leaf_index < end)
        .order_by(_LEAVES.c.leaf_index)
        .limit(limit)
    )
    if partner_id is not None:
        query = query.where(_LEAVES.c.partner_id == partner_id)
    return [
        {"kind": "leaf", "leaf_index": row.leaf_index, "record_id": row.id, "entry": record_entry(row)}
        for row in session.connection().execute(query)
    ]


def _checkpoint(session: Session, tree_size: int | None) -> AuditCheckpoint:
    if tree_size is not None:
        return checkpoint_at(session, tree_size)
    latest = latest_checkpoint(session)
    if latest is None:
        raise NoSuchCheckpoint("no checkpoint has been signed yet: run `entente audit checkpoint`")
    return latest


def _header(
    session: Session, *, tree_size: int | None, since: int, partner: tuple[str, str] | None, prove_from: Sequence[int]
) -> dict[str, Any]:
    checkpoint = _checkpoint(session, tree_size)
    size = checkpoint.tree_size
    if not 0 <= since <= size:
        raise OutOfRange(f"--since {since} is beyond the checkpoint's {size} leaves")
    text, _ = split_note(checkpoint.note)
    return {
        "kind": "header",
        "format": FORMAT,
        "origin": Checkpoint.parse(text).origin,
        "tree_size": size,
        "checkpoint": cosigned_note(session, tree_size=size, note=checkpoint.note),
        "start": since,
        "partner": partner[1] if partner else None,
        "partner_id": partner[0] if partner else None,
        "prefix": [] if partner else _b64(compact_range(session, since).hashes()),
        "consistency": {
            str(m): _b64(consistency_proof(session, first=m, second=size)) for m in sorted(set(prove_from))
        },
    }


def export_lines(
    engine: Engine,
    *,
    tree_size: int | None = None,
    since: int = 0,
    partner: tuple[str, str] | None = None,
    prove_from: Sequence[int] = (),
) -> Iterator[str]:
    """The export, line by line, cut at checkpoint ``tree_size`` (default: the latest).

    ``partner`` = (id, slug) exports that partner's records only, each with its inclusion proof;
    ``since`` is the first leaf index; ``prove_from`` adds consistency proofs from those sizes.
    Each page is read in its own short transaction (everything below a checkpoint is immutable),
    so a long export never holds SQLite's lock or a PostgreSQL snapshot for long.
    """
    with Session(engine) as session:
        header = _header(session, tree_size=tree_size, since=since, partner=partner, prove_from=prove_from)
    yield _line(header)
    size, count, cursor = header["tree_size"], 0, since
    while cursor < size:
        with Session(engine) as session:
            page = leaf_rows(session, start=cursor, end=size, partner_id=partner[0] if partner else None)
            if partner and page:
                proofs = inclusion_proofs(session, leaf_indices=[r["leaf_index"] for r in page], tree_size=size)
                for row in page:
                    row["proof"] = _b64(proofs[row["leaf_index"]])
        if not page:
            break
        for row in page:
            yield _line(row)
        count += len(page)
        cursor = page[-1]["leaf_index"] + 1
    yield _line({"kind": "end", "leaves": count})
