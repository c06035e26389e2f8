"""The audit API under ``/audit/v1``: checkpoints, RFC 9162 proofs, leaves, exports, cosignatures.

Who may call (RFC 6750 bearer tokens):

- an **operator**, with the token whose SHA-256 is ``ENTENTE_AUDIT_OPERATOR_TOKEN_SHA256``: everything;
- a **partner**, with one of its SCIM tokens: checkpoints and consistency proofs (public facts about
  the whole tree), inclusion proofs and exports of its *own* records only, and cosignatures. The
  SCIM token is reused because a partner's slice is exactly what that token wrote or caused: no new
  credential to issue, rotate or leak, and revoking the token ends both uses at once.

Hashes are base64 (as in checkpoints); no request reads more than O(log n) tree nodes per proof.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlmodel import Session

from broker.audit.checkpoints import AuditCheckpoint, checkpoint_at, latest_checkpoint
from broker.audit.cosign import add_cosignature, cosigned_note
from broker.audit.errors import NoSuchCheckpoint, OutOfRange
from broker.audit.export import export_lines, leaf_rows
from broker.audit.log import Actor
from broker.audit.merkle import Node
from broker.audit.note import Checkpoint, split_note
from broker.audit.tree import AuditLeaf, AuditNode, consistency_proof, inclusion_proof, node_key
from broker.db import SessionDep
from broker.errors import Forbidden, NotFound, Unauthorized
from broker.settings import Settings
from broker.tenants.service import authenticate_scim_token

__all__ = ["router"]

router = APIRouter(prefix="/audit/v1", tags=["audit"])
MAX_LEAVES = 1000


@dataclass(frozen=True)
class AuditReader:
    """The caller: an operator (``partner_id`` None) or one partner."""

    partner_id: str | None
    partner_slug: str | None
    actor: Actor


def audit_reader(request: Request, session: SessionDep) -> AuditReader:
    """Resolve the bearer token to an operator or a partner, or raise Unauthorized."""
    header = request.headers.get("authorization") or ""
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized("send 'Authorization: Bearer <token>'", credentials_sent=False)
    credential = credential.strip()
    if credential.startswith("ent_scim_"):
        token = authenticate_scim_token(session=session, presented=credential)
        return AuditReader(token.partner_id, token.partner_slug, Actor("scim_token", token.token_id))
    settings: Settings = request.app.state.settings
    expected = settings.audit_operator_token_sha256
    presented = hashlib.sha256(credential.encode()).hexdigest()
    if expected is None or not hmac.compare_digest(presented, expected):
        raise Unauthorized("invalid bearer token")
    return AuditReader(None, None, Actor("operator", "audit-api"))


ReaderDep = Annotated[AuditReader, Depends(audit_reader)]


def _operator(reader: AuditReader) -> None:
    if reader.partner_id is not None:
        raise Forbidden("only an operator may read the whole log; partners read /audit/v1/export")


def _b64(values: list[bytes]) -> list[str]:
    return [base64.b64encode(v).decode() for v in values]


class CheckpointOut(BaseModel):
    origin: str
    tree_size: int
    root_hash: str = Field(description="base64 RFC 9162 root hash")
    timestamp: int = Field(description="POSIX seconds at signing (the note's `time` line)")
    key_id: str
    verifier_key: str = Field(description="the log key, signed-note verifier key form")
    note: str = Field(description="the signed note, with every partner cosignature line appended")


def _checkpoint_out(session: Session, row: AuditCheckpoint) -> CheckpointOut:
    parsed = Checkpoint.parse(split_note(row.note)[0])
    return CheckpointOut(
        origin=parsed.origin,
        tree_size=row.tree_size,
        root_hash=base64.b64encode(row.root_hash).decode(),
        timestamp=parsed.timestamp or 0,
        key_id=row.key_id,
        verifier_key=row.verifier_key,
        note=cosigned_note(session, tree_size=row.tree_size, note=row.note),
    )


def _latest(session: Session) -> AuditCheckpoint:
    row = latest_checkpoint(session)
    if row is None:
        raise NoSuchCheckpoint("no checkpoint has been signed yet")
    return row


def _signed_size(session: Session, tree_size: int) -> None:
    latest = _latest(session)
    if tree_size > latest.tree_size:
        raise OutOfRange(f"the latest checkpoint covers {latest.tree_size} leaves, not {tree_size}")


@router.get("/checkpoint", response_model=CheckpointOut)
def get_latest_checkpoint(reader: ReaderDep, session: SessionDep) -> CheckpointOut:
    """The latest signed checkpoint."""
    return _checkpoint_out(session, _latest(session))


@router.get("/checkpoints/{tree_size}", response_model=CheckpointOut)
def get_checkpoint(tree_size: int, reader: ReaderDep, session: SessionDep) -> CheckpointOut:
    """The checkpoint signed at exactly this tree size."""
    return _checkpoint_out(session, checkpoint_at(session, tree_size))


class InclusionOut(BaseModel):
    leaf_index: int
    tree_size: int
    leaf_hash: str
    proof: list[str]


@router.get("/proofs/inclusion", response_model=InclusionOut)
def get_inclusion_proof(
    reader: ReaderDep,
    session: SessionDep,
    leaf_index: Annotated[int, Query(ge=0)],
    tree_size: Annotated[int, Query(ge=1)],
) -> InclusionOut:
    """RFC 9162 §2.1.3 audit path of a leaf in the tree of ``tree_size`` leaves (at most the latest checkpoint)."""
    _signed_size(session, tree_size)
    leaf = session.get(AuditLeaf, leaf_index)
    if leaf is None or leaf_index >= tree_size or (reader.partner_id and leaf.partner_id != reader.partner_id):
        raise NotFound(f"no leaf {leaf_index} of yours in the tree of {tree_size} leaves")
    proof = inclusion_proof(session, leaf_index=leaf_index, tree_size=tree_size)
    leaf_hash = _leaf_hash(session, leaf_index)
    return InclusionOut(leaf_index=leaf_index, tree_size=tree_size, leaf_hash=leaf_hash, proof=_b64(proof))


def _leaf_hash(session: Session, leaf_index: int) -> str:
    node = session.get(AuditNode, node_key(Node(0, leaf_index)))
    if node is None:
        raise NotFound(f"no leaf {leaf_index}")
    return base64.b64encode(node.hash).decode()


class ConsistencyOut(BaseModel):
    first: int
    second: int
    proof: list[str]


@router.get("/proofs/consistency", response_model=ConsistencyOut)
def get_consistency_proof(
    reader: ReaderDep,
    session: SessionDep,
    first: Annotated[int, Query(ge=0)],
    second: Annotated[int, Query(ge=0)],
) -> ConsistencyOut:
    """RFC 9162 §2.1.4 proof that the tree of ``second`` leaves extends the tree of ``first``."""
    _signed_size(session, second)
    if first > second:
        raise OutOfRange(f"first ({first}) is larger than second ({second})")
    return ConsistencyOut(
        first=first, second=second, proof=_b64(consistency_proof(session, first=first, second=second))
    )


class LeafOut(BaseModel):
    leaf_index: int
    record_id: int
    entry: dict[str, object] = Field(description="the record; its canonical JSON is the RFC 9162 leaf data")


@router.get("/leaves", response_model=list[LeafOut])
def get_leaves(
    reader: ReaderDep,
    session: SessionDep,
    start: Annotated[int, Query(ge=0)],
    end: Annotated[int, Query(ge=1)],
) -> list[LeafOut]:
    """Leaves [start, end) of the whole log, at most 1000 (operators only)."""
    _operator(reader)
    if end <= start:
        raise OutOfRange("end must be larger than start")
    _signed_size(session, end)
    rows = leaf_rows(session, start=start, end=min(end, start + MAX_LEAVES))
    return [LeafOut(leaf_index=r["leaf_index"], record_id=r["record_id"], entry=r["entry"]) for r in rows]


@router.get("/export", response_class=StreamingResponse)
def get_export(
    request: Request,
    reader: ReaderDep,
    session: SessionDep,
    tree_size: Annotated[int | None, Query(ge=1, description="checkpoint to cut at; default the latest")] = None,
    since: Annotated[int, Query(ge=0, description="first leaf index")] = 0,
    prove_from: Annotated[list[int] | None, Query(description="add consistency proofs from these sizes")] = None,
) -> StreamingResponse:
    """The JSON Lines export `entente audit verify` checks: a partner gets its own records, each with
    its inclusion proof; an operator the whole log."""
    partner = (reader.partner_id, reader.partner_slug or "") if reader.partner_id else None
    # resolved now, so a bad size is an error response and not a broken stream
    size = (checkpoint_at(session, tree_size) if tree_size is not None else _latest(session)).tree_size
    if since > size or any(m > size for m in prove_from or ()):
        raise OutOfRange(f"since and prove_from must not exceed the checkpoint's {size} leaves")
    session.rollback()  # the stream reads in its own short transactions; hold no lock meanwhile
    lines = export_lines(
        request.app.state.engine, tree_size=size, since=since, partner=partner, prove_from=prove_from or ()
    )
    return StreamingResponse(lines, media_type="application/jsonl")


class CosignatureIn(BaseModel):
    tree_size: int = Field(ge=1)
    signature_line: str = Field(
        max_length=1000, description="`— <key name> base64(key id || timestamp || Ed25519 signature)`"
    )


class CosignatureOut(BaseModel):
    tree_size: int
    key_name: str
    cosigned_at: int
    note: str


@router.post("/cosignatures", response_model=CosignatureOut, status_code=201)
def post_cosignature(body: CosignatureIn, reader: ReaderDep, session: SessionDep) -> CosignatureOut:
    """Store a partner's c2sp.org/tlog-cosignature ``cosignature/v1`` over a checkpoint (partners only)."""
    if reader.partner_id is None:
        raise Forbidden("cosignatures come from partners, with their SCIM token")
    row = add_cosignature(
        session=session,
        partner_id=reader.partner_id,
        tree_size=body.tree_size,
        line=body.signature_line,
        actor=reader.actor,
    )
    note = cosigned_note(session, tree_size=body.tree_size, note=checkpoint_at(session, body.tree_size).note)
    return CosignatureOut(
        tree_size=row.tree_size,
        key_name=row.line[2:].split(" ", 1)[0],
        cosigned_at=int(row.cosigned_at.timestamp()),
        note=note,
    )
