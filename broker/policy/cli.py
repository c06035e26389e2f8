"""`entente policy …`: dry-run a policy change (who gains, loses or changes access), then apply it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from sqlmodel import Session

from broker.clikit import actor, fail, open_session
from broker.errors import BrokerError, InvalidValue
from broker.lifecycle import wakeup
from broker.lifecycle.engine import AccessChange, change_as_row
from broker.policy.changes import policy_changes
from broker.settings import Settings

__all__ = ["policy_app"]

policy_app = typer.Typer(help="Access policies: diff (dry run) and apply.", no_args_is_help=True)


def _documents(files: list[Path]) -> list[tuple[str, str]]:
    documents = []
    for path in files:
        try:
            documents.append((path.name, path.read_text(encoding="utf-8")))
        except OSError as exc:
            fail(InvalidValue(f"{path}: {exc.strerror}"))
    return documents


def _changes(session: Session, files: list[Path]) -> list[AccessChange]:
    """Store the policies and re-decide every partner's people, in the session's open transaction."""
    return policy_changes(session, documents=_documents(files), actor=actor())  # PolicyError names file/rule


def _print(changes: list[AccessChange], as_json: bool, *, applied: bool) -> None:
    if as_json:
        typer.echo(json.dumps([change_as_row(c) for c in changes], indent=2))
        return
    for c in changes:
        role = {
            "gain": f"+ {c.role_after}",
            "lose": f"- {c.role_before}",
            "change": f"{c.role_before} -> {c.role_after}",
            "refresh": f"= {c.role_after} (profile/until)",
        }[c.change]
        until = f" until {c.until.isoformat()}" if c.until else ""
        typer.echo(f"{c.change:7} {c.workspace:20} {c.user_name or c.subject_id:40} {role}{until} [{c.rule_id or '-'}]")
    verb = "changed" if applied else "would change"
    typer.echo(f"{len(changes)} access {'entry' if len(changes) == 1 else 'entries'} {verb}")


@policy_app.command("diff")
def policy_diff(
    files: Annotated[list[Path], typer.Argument(help="Policy YAML files (the whole set to be in force).")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show exactly who would gain, lose or change access if FILES were applied; changes nothing."""
    with open_session(Settings()) as session:
        try:
            changes = _changes(session, files)
        except BrokerError as error:
            fail(error)
        finally:
            session.rollback()
    _print(changes, as_json, applied=False)


@policy_app.command("apply")
def policy_apply(
    files: Annotated[list[Path], typer.Argument(help="Policy YAML files (the whole set to be in force).")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Put FILES in force: grants change and deliveries are queued in one transaction."""
    with open_session(Settings()) as session:
        try:
            changes = _changes(session, files)
            session.commit()
        except BrokerError as error:
            session.rollback()
            fail(error)
    wakeup.notify()
    _print(changes, as_json, applied=True)
