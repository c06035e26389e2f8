"""`entente kill …`: the kill switch from the command line (suspend a person or a partner everywhere; lift it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from sqlmodel import Session, col, select

from broker.clikit import actor, fail, open_session
from broker.errors import BrokerError
from broker.lifecycle.killswitch import KillOutcome, lift_partner, lift_person, suspend_partner, suspend_person
from broker.lifecycle.suspensions import live_suspensions
from broker.scim.models import ScimUser
from broker.settings import Settings
from broker.tenants.models import Partner

__all__ = ["kill_app"]

kill_app = typer.Typer(
    help="Kill switch: suspend a person or a whole partner in every workspace at once (audited).",
    no_args_is_help=True,
)

Reason = Annotated[str, typer.Option("--reason", help="Why (required; recorded in the audit log).")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]


def _confirm(question: str, yes: bool) -> None:
    if not yes and not typer.confirm(question, default=False):
        typer.echo("nothing changed")
        raise typer.Exit(code=1)


def _summary(verb: str, outcome: KillOutcome) -> None:
    who = f"person {outcome.subject_id}" if outcome.subject_id else f"partner {outcome.partner_slug}"
    grants = "grants lost" if verb == "suspended" else "grants restored"
    typer.echo(
        f"{who} {verb} (suspension {outcome.suspension_id}): {outcome.people} "
        f"{'person' if outcome.people == 1 else 'people'} re-decided, {len(outcome.changes)} {grants}"
        + (f", {outcome.sessions} sessions and token families ended" if verb == "suspended" else "")
    )
    for change in outcome.changes:
        typer.echo(f"  {change.change:5} {change.workspace:20} {change.user_name or change.subject_id}")


def _apply(verb: str, change: Callable[[Session], KillOutcome]) -> None:
    """Run ``change`` in a session of its own and print what it did; a refusal is a one-line error, exit 1."""
    with open_session(Settings()) as session:
        try:
            outcome = change(session)
        except BrokerError as error:
            fail(error)
    _summary(verb, outcome)


@kill_app.command("person")
def kill_person(
    partner: Annotated[str, typer.Argument(help="The partner's slug.")],
    person: Annotated[str, typer.Argument(help="The person's SCIM id or userName.")],
    reason: Reason,
    yes: Yes = False,
) -> None:
    """Suspend one person everywhere: access revoked in every workspace, sessions and tokens ended."""
    _confirm(f"Suspend {person} of partner {partner} in every workspace?", yes)
    _apply(
        "suspended",
        lambda session: suspend_person(session, partner_slug=partner, person=person, reason=reason, actor=actor()),
    )


@kill_app.command("partner")
def kill_partner(
    slug: Annotated[str, typer.Argument(help="The partner's slug.")],
    reason: Reason,
    yes: Yes = False,
) -> None:
    """Suspend every person of a partner everywhere, including people its feed adds later."""
    _confirm(f"Suspend EVERY person of partner {slug} in every workspace?", yes)
    _apply("suspended", lambda session: suspend_partner(session, partner_slug=slug, reason=reason, actor=actor()))


@kill_app.command("lift")
def kill_lift(
    partner: Annotated[str, typer.Argument(help="The partner's slug.")],
    reason: Reason,
    person: Annotated[
        str | None, typer.Argument(help="The person's SCIM id or userName; omitted: the partner-wide suspension.")
    ] = None,
    yes: Yes = False,
) -> None:
    """Lift a suspension: access comes back as the policies grant it now (people sign in again)."""
    target = f"{person} of partner {partner}" if person else f"partner {partner}"
    _confirm(f"Lift the suspension of {target}?", yes)
    if person:
        _apply(
            "lifted",
            lambda session: lift_person(session, partner_slug=partner, person=person, reason=reason, actor=actor()),
        )
    else:
        _apply("lifted", lambda session: lift_partner(session, partner_slug=partner, reason=reason, actor=actor()))


@kill_app.command("list")
def kill_list() -> None:
    """Suspensions in force: id, partner, person (or *), since, by whom, why."""
    with open_session(Settings()) as session:
        slugs = dict(session.exec(select(Partner.id, Partner.slug)).all())
        rows = live_suspensions(session)
        names = dict(
            session.exec(
                select(ScimUser.id, ScimUser.user_name).where(
                    col(ScimUser.id).in_([r.subject_id for r in rows if r.subject_id])
                )
            ).all()
        )
    for row in rows:
        who = names.get(row.subject_id, row.subject_id) if row.subject_id else "*"
        typer.echo(
            f"{row.id}\t{slugs.get(row.partner_id, row.partner_id)}\t{who}\t"
            f"{row.suspended_at.isoformat()}\t{row.suspended_by}\t{row.reason}"
        )
    typer.echo(f"{len(rows)} suspension{'s' if len(rows) != 1 else ''} in force")
