"""`entente audit …`: export, checkpoint, verify (offline), keys, SIEM status; and `entente partner audit-key`."""

from __future__ import annotations

import hashlib
import json
import secrets
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from sqlalchemy import Engine
from sqlmodel import select

from broker.audit.checkpoints import latest_checkpoint, load_log_key, make_checkpoint
from broker.audit.cosign import cosigned_note, parse_public_key, register_partner_key
from broker.audit.export import export_lines
from broker.audit.note import VerifierKey, cosign, split_note
from broker.audit.siem import pending_count, siem_status, sinks_from_settings
from broker.audit.tree import enqueue_missing
from broker.audit.verify import verify_export
from broker.clikit import actor, fail, open_session
from broker.errors import BrokerError, InvalidValue, NotFound
from broker.settings import Settings
from broker.tenants.models import Partner

__all__ = ["audit_app", "partner_audit_key"]

audit_app = typer.Typer(
    help="The verifiable audit log: checkpoints, exports, offline verification.", no_args_is_help=True
)
siem_app = typer.Typer(help="Streaming the audit log to SIEMs.", no_args_is_help=True)
audit_app.add_typer(siem_app, name="siem")


def _read(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidValue(f"cannot read {what} {path}: {exc.strerror}") from exc


@audit_app.command("checkpoint")
def checkpoint_command() -> None:
    """Sequence every pending record and sign a checkpoint now (if the log grew); print the latest note."""
    settings = Settings()
    with open_session(settings) as session:
        try:
            enqueue_missing(session)
            make_checkpoint(session, settings, force=True, wait=True)
            latest = latest_checkpoint(session)
        except BrokerError as error:
            fail(error)
        if latest is None:
            fail(NotFound("the audit log is empty: nothing to sign"))
            return
        typer.echo(cosigned_note(session, tree_size=latest.tree_size, note=latest.note), nl=False)


@audit_app.command("export")
def export_command(
    partner: Annotated[
        str | None, typer.Option(help="Only this partner's records, each with its inclusion proof.")
    ] = None,
    since: Annotated[int, typer.Option(help="First leaf index to export.")] = 0,
    tree_size: Annotated[int | None, typer.Option(help="Checkpoint to cut at (default: the latest).")] = None,
    prove_from: Annotated[
        list[int] | None, typer.Option(help="Add a consistency proof from this earlier tree size; repeatable.")
    ] = None,
) -> None:
    """Write the log (or a partner's slice) as JSON Lines on stdout, cut at a signed checkpoint."""
    settings = Settings()
    with open_session(settings) as session:
        try:
            scope = None
            if partner is not None:
                found = session.exec(select(Partner).where(Partner.slug == partner)).first()
                if found is None:
                    raise NotFound(f"no partner '{partner}'")
                scope = (found.id, found.slug)
            out = sys.stdout
            session.rollback()
            engine = session.get_bind()
            assert isinstance(engine, Engine)  # open_session binds to an engine
            lines = export_lines(engine, tree_size=tree_size, since=since, partner=scope, prove_from=prove_from or ())
            for line in lines:
                out.write(line)
            out.flush()
        except BrokerError as error:
            fail(error)


@audit_app.command("verify")
def verify_command(
    export: Annotated[Path, typer.Argument(help="The JSON Lines export.")],
    checkpoint: Annotated[Path, typer.Option(help="The signed checkpoint note the export is cut at.")],
    public_key: Annotated[
        Path | None,
        typer.Option(help="The log's verifier key (`entente audit public-key`); without it, no signature check."),
    ] = None,
    earlier: Annotated[
        list[Path] | None, typer.Option(help="An earlier checkpoint you hold; it must be a prefix. Repeatable.")
    ] = None,
    cosigner_key: Annotated[
        list[Path] | None, typer.Option(help="A cosigner's verifier key whose cosignature must be on the checkpoint.")
    ] = None,
) -> None:
    """Verify an export offline (no database): leaf hashes, root or inclusion proofs, signatures, consistency."""
    try:
        key = VerifierKey.parse(_read(public_key, "public key")) if public_key else None
        cosigners = [parse_public_key(_read(p, "cosigner key"), default_name=p.stem) for p in cosigner_key or ()]
        with export.open(encoding="utf-8", newline="") as lines:
            report = verify_export(
                lines,
                checkpoint_note=_read(checkpoint, "checkpoint"),
                log_key=key,
                earlier_notes=[_read(p, "earlier checkpoint") for p in earlier or ()],
                cosigner_keys=cosigners,
            )
    except OSError as exc:
        fail(InvalidValue(f"cannot read export {export}: {exc.strerror}"))
        return
    except BrokerError as error:
        fail(error)
        return
    scope = f"partner {report.partner}'s slice" if report.partner else "the whole log"
    typer.echo(
        f"ok: {report.leaves} leaves of {scope} verified against {report.origin} at tree size {report.tree_size}"
    )
    if report.earlier:
        typer.echo(f"ok: consistent with earlier checkpoints at {', '.join(map(str, report.earlier))}")
    if report.cosigners:
        typer.echo(f"ok: cosigned by {', '.join(report.cosigners)}")
    if not report.signature_checked:
        typer.echo("warning: the checkpoint's signature was not checked (no --public-key)", err=True)


@audit_app.command("public-key")
def public_key_command() -> None:
    """Print the log's verifier key (signed-note form), to give to partners and auditors."""
    try:
        typer.echo(load_log_key(Settings()).verifier_key.encode())
    except BrokerError as error:
        fail(error)


@audit_app.command("operator-token")
def operator_token_command() -> None:
    """Make an operator token for the audit API: set the printed hash, keep the token (last line)."""
    token = "ent_audit_" + secrets.token_urlsafe(32)
    typer.echo(f"ENTENTE_AUDIT_OPERATOR_TOKEN_SHA256={hashlib.sha256(token.encode()).hexdigest()}")
    typer.echo(token)


@audit_app.command("cosign")
def cosign_command(
    checkpoint: Annotated[Path, typer.Argument(help="The checkpoint note to cosign (verify it first).")],
    key: Annotated[
        Path, typer.Option(help="Your Ed25519 private key, PKCS#8 PEM (openssl genpkey -algorithm ed25519).")
    ],
    name: Annotated[str, typer.Option(help="Your cosigner name, as registered with `entente partner audit-key`.")],
) -> None:
    """Print a c2sp.org/tlog-cosignature line over a checkpoint (offline), to POST to /audit/v1/cosignatures."""
    try:
        private = load_pem_private_key(_read(key, "private key").encode(), password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise InvalidValue("the private key is not an Ed25519 key")
        text, _ = split_note(_read(checkpoint, "checkpoint"))
        typer.echo(cosign(text, name, private, int(time.time())).line(), nl=False)
    except ValueError as exc:
        fail(InvalidValue(f"the private key cannot be read: {exc}"))
    except BrokerError as error:
        fail(error)


@siem_app.command("status")
def siem_status_command(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Each configured SIEM sink's cursor (leaves shipped) and lag (leaves not yet shipped, oldest's age)."""
    settings = Settings()
    sinks = sinks_from_settings(settings)
    try:
        with open_session(settings) as session:
            statuses = siem_status(session, sinks=sinks)
            pending = pending_count(session)
    finally:
        for sink in sinks:
            sink.close()
    rows = [
        {
            "sink": s.name,
            "target": s.target,
            "cursor": s.cursor,
            "tree_size": s.tree_size,
            "lag": s.lag,
            "lag_seconds": round(s.lag_seconds, 1),
        }
        for s in statuses
    ]
    if as_json:
        typer.echo(json.dumps({"pending_sequencing": pending, "sinks": rows}, indent=2))
        return
    if not rows:
        typer.echo("no SIEM sink is configured (ENTENTE_SIEM_WEBHOOK_URL, ENTENTE_SIEM_SYSLOG)")
        return
    typer.echo(f"tree size {statuses[0].tree_size}; {pending} records waiting to be sequenced")
    typer.echo("sink\ttarget\tcursor\tlag\toldest unshipped")
    for row in rows:
        age = f"{row['lag_seconds']} s" if row["lag"] else "-"
        typer.echo(f"{row['sink']}\t{row['target']}\t{row['cursor']}\t{row['lag']}\t{age}")


def partner_audit_key(
    slug: str,
    pubkey_file: Annotated[Path, typer.Argument(help="Ed25519 public key: PEM, base64, or a type 0x04 verifier key.")],
    name: Annotated[str | None, typer.Option(help="Cosigner name (default: the slug).")] = None,
) -> None:
    """Register a partner's Ed25519 key for cosigning audit checkpoints."""
    settings = Settings()
    with open_session(settings) as session:
        try:
            key = parse_public_key(_read(pubkey_file, "public key"), default_name=name or slug)
            row = register_partner_key(session=session, slug=slug, key=key, actor=actor())
        except BrokerError as error:
            fail(error)
            return
        typer.echo(f"partner {slug}: cosigning key {row.name} ({row.key_id}) registered")
        typer.echo(key.encode())
