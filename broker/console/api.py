"""The admin console's HTTP edge (/console): server-rendered Jinja2 pages, forms with CSRF tokens, no JavaScript.

Pages read through ``broker.console.views`` and act through the same services as the CLI
(``broker.lifecycle.killswitch``, ``broker.lifecycle.outbox.retry_dead_tasks``); errors are
``BrokerError``s rendered as an HTML page by ``error_page`` (``LoginRequired`` becomes a redirect
to the sign-in page).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from sqlmodel import Session, col, select
from starlette.concurrency import run_in_threadpool

from broker.audit.log import Actor, append_audit
from broker.console import checks, views
from broker.console.auth import (
    Admin,
    LoginRequired,
    authenticate_local,
    ensure_bootstrap_admin,
    resolve,
)
from broker.console.oidc import (
    HOOK_PATH,
    ConsoleLoginError,
    authorization_url,
    ensure_console_client,
    redeem,
    verify_hook,
)
from broker.console.session import ConsoleState, SignedIn, check_csrf, read_state, write_state
from broker.errors import BrokerError, Forbidden, InvalidValue, NotFound
from broker.federation.transaction import UnsafeRedirect, safe_next
from broker.lifecycle import wakeup
from broker.lifecycle.killswitch import lift_partner, lift_person, suspend_partner, suspend_person
from broker.lifecycle.outbox import retry_dead_tasks
from broker.lifecycle.suspensions import live_suspensions
from broker.policy.loader import PolicyError
from broker.reports.render import ReportFormat, render
from broker.reports.runner import stale_access
from broker.scim.models import ScimUser
from broker.settings import Settings
from broker.tenants.models import Partner
from broker.types import utcnow
from broker.workspaces.service import get_workspace

__all__ = ["error_page", "router"]

_HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(_HERE / "templates"))
templates.env.filters["when"] = lambda value: value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"
router = APIRouter(prefix="/console", include_in_schema=False)
_NO_STORE = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
"""Every console answer: never cached, never framed (a framed kill-switch or sign-in form is a
clickjacking target, RFC 9700 §4.16), no ``Referer`` to other sites."""


@dataclass
class Ctx:
    """One console request: its database session, settings, cookie state and (if signed in) admin."""

    request: Request
    session: Session
    settings: Settings
    state: ConsoleState

    def admin(self) -> Admin:
        return resolve(self.session, settings=self.settings, user=self.state.user)

    def actor(self, admin: Admin) -> Actor:
        return Actor(kind="console", id=admin.name if admin.kind == "local" else f"{admin.partner_slug}/{admin.name}")

    def page(self, name: str, *, admin: Admin | None, status: int = 200, **context: Any) -> Response:
        response = templates.TemplateResponse(
            self.request,
            name,
            {"admin": admin, "csrf": self.state.csrf, "now": utcnow(), **context},
            status_code=status,
            headers=_NO_STORE,
        )
        write_state(response, self.state, self.settings)
        return response

    def redirect(self, to: str, state: ConsoleState | None = None) -> Response:
        response = RedirectResponse(to, status_code=303, headers=_NO_STORE)
        write_state(response, state or self.state, self.settings)
        return response


def _ctx(request: Request) -> Iterator[Ctx]:
    settings: Settings = request.app.state.settings
    with Session(request.app.state.engine, expire_on_commit=False) as session:
        yield Ctx(request, session, settings, read_state(request, settings))


CtxDep = Annotated[Ctx, Depends(_ctx)]
Csrf = Annotated[str | None, Form()]


def error_page(request: Request, error: BrokerError) -> Response:
    """The HTML answer to a console error: sign-in redirect for ``LoginRequired``, else a page with the reason."""
    if isinstance(error, LoginRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/console/login?next={quote(target)}", status_code=303, headers=_NO_STORE)
    titles = {400: "Request refused", 403: "Not allowed", 404: "Not found", 409: "Already done"}
    return templates.TemplateResponse(
        request,
        "error.html",
        {"admin": None, "csrf": "", "title": titles.get(error.status, "Error"), "detail": error.detail},
        status_code=error.status if error.status >= 400 else 500,
        headers=_NO_STORE,
    )


def _next(value: str | None) -> str:
    try:
        target = safe_next(value, default="/console/partners")
    except UnsafeRedirect:
        return "/console/partners"
    return target if target.startswith("/console") else "/console/partners"


@router.get("/static/console.css")
def stylesheet() -> FileResponse:
    return FileResponse(
        _HERE / "static" / "console.css", media_type="text/css", headers={"Cache-Control": "max-age=3600"}
    )


@router.get("")
@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/console/partners", status_code=303)


@router.get("/login")
def login_page(ctx: CtxDep, next: str | None = None, message: str | None = None) -> Response:  # noqa: A002
    return ctx.page("login.html", admin=None, title="Sign in", next=_next(next), message=message)


@router.post("/login")
def login(
    ctx: CtxDep,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf: Csrf = None,
    next: Annotated[str | None, Form()] = None,  # noqa: A002
) -> Response:
    """Local admins (the bootstrap operator): scrypt-checked password, audited either way."""
    check_csrf(ctx.state, csrf)
    ensure_bootstrap_admin(ctx.session, settings=ctx.settings)
    row = authenticate_local(ctx.session, username=username, password=password)
    append_audit(
        ctx.session,
        actor=Actor(kind="console", id=username.strip()[:64] or "?"),
        action="console.login_succeeded" if row else "console.login_failed",
        partner_id=None,
        resource_type="ConsoleAdmin",
        resource_id=username.strip()[:64] or None,
        detail={"method": "password"},
    )
    ctx.session.commit()
    if row is None:
        return ctx.page(
            "login.html",
            admin=None,
            status=401,
            title="Sign in",
            next=_next(next),
            message="Wrong username or password.",
        )
    signed = ctx.state.signed_in(
        SignedIn(kind="local", name=row.username), minutes=ctx.settings.console_session_minutes
    )
    return ctx.redirect(_next(next), signed)


@router.get("/login/oidc")
def login_oidc(ctx: CtxDep, next: str | None = None) -> Response:  # noqa: A002
    """Start the code flow at Entente's own provider (which sends the browser through the partner's IdP)."""
    ensure_console_client(ctx.session, settings=ctx.settings)
    pending, url = authorization_url(settings=ctx.settings, next_path=_next(next))
    return ctx.redirect(url, ctx.state.with_pending(pending))


@router.get("/callback")
async def callback(
    request: Request, code: str | None = None, state: str | None = None, error: str | None = None
) -> Response:
    """The provider's redirect (RFC 6749 §4.1.2): check ``state``, redeem the code, verify the ID token."""
    settings: Settings = request.app.state.settings
    current = read_state(request, settings)
    pending = current.pending
    if pending is None or not state or state != pending.state:
        raise ConsoleLoginError("this sign-in was not started in this browser (state mismatch); start again")
    if error or not code:
        response = RedirectResponse(
            f"/console/login?message={quote('Entente did not sign you in to the console: ' + (error or 'no code'))}",
            status_code=303,
        )
        write_state(response, current.with_pending(None), settings)
        return response
    claims = await redeem(request.app, settings=settings, pending=pending, code=code)

    def sign_in() -> SignedIn:
        with Session(request.app.state.engine, expire_on_commit=False) as session:
            user = session.exec(select(ScimUser).where(ScimUser.id == str(claims["sub"]))).first()
            if user is None:
                raise ConsoleLoginError("the signed-in person no longer exists")
            signed = SignedIn(
                kind="oidc", name=user.user_name, partner_id=user.partner_id, subject_id=user.id, sid=str(claims["sid"])
            )
            admin = resolve(session, settings=settings, user=signed)  # refuses anyone who is not a console admin
            append_audit(
                session,
                actor=Actor(kind="console", id=f"{admin.partner_slug}/{admin.name}"),
                action="console.login_succeeded",
                partner_id=user.partner_id,
                resource_type="User",
                resource_id=user.id,
                detail={"method": "oidc", "role": admin.role},
            )
            session.commit()
            return signed

    signed = await run_in_threadpool(sign_in)
    response = RedirectResponse(pending.next, status_code=303, headers=_NO_STORE)
    write_state(response, current.signed_in(signed, minutes=settings.console_session_minutes), settings)
    return response


@router.post("/logout")
def logout(ctx: CtxDep, csrf: Csrf = None) -> Response:
    check_csrf(ctx.state, csrf)
    return ctx.redirect("/console/login?message=Signed+out.", ctx.state.signed_out())


@router.get("/partners")
def partners_page(ctx: CtxDep) -> Response:
    admin = ctx.admin()
    return ctx.page("partners.html", admin=admin, title="Partners", section="partners",
                    partners=views.partners(ctx.session, admin=admin))  # fmt: skip


@router.get("/partners/{slug}")
def partner_page(ctx: CtxDep, slug: str) -> Response:
    admin = ctx.admin()
    partner, people, suspended = views.partner_people(ctx.session, admin=admin, slug=slug)
    return ctx.page("partner.html", admin=admin, title=f"People of {partner.slug}", section="partners",
                    partner=partner, people=people, suspended=suspended)  # fmt: skip


@router.get("/idps")
def idps_page(ctx: CtxDep) -> Response:
    admin = ctx.admin()
    return ctx.page("idps.html", admin=admin, title="IdP connections", section="idps",
                    connections=views.idp_connections(ctx.session, admin=admin))  # fmt: skip


@router.get("/workspaces")
def workspaces_page(ctx: CtxDep, message: str | None = None) -> Response:
    admin = ctx.admin()
    return ctx.page("workspaces.html", admin=admin, title="Workspaces", section="workspaces", message=message,
                    workspaces=views.workspaces(ctx.session, admin=admin))  # fmt: skip


@router.post("/workspaces/{slug}/retry")
def retry(ctx: CtxDep, slug: str, csrf: Csrf = None, task_id: Annotated[int | None, Form()] = None) -> Response:
    """Give a dead letter (or, without ``task_id``, all of the workspace's) fresh attempts; audited."""
    check_csrf(ctx.state, csrf)
    admin = ctx.admin()
    admin.require_operator()
    workspace = get_workspace(ctx.session, slug=slug)
    ids = [task_id] if task_id is not None else None
    count = retry_dead_tasks(ctx.session, task_ids=ids, workspace_id=workspace.id)
    append_audit(
        ctx.session,
        actor=ctx.actor(admin),
        action="outbox.retried",
        partner_id=None,
        resource_type="Task",
        detail={"task_ids": ids or [], "workspace": slug, "count": count},
    )
    ctx.session.commit()
    wakeup.notify()
    return ctx.redirect(f"/console/workspaces?message={quote(f'{count} dead letter(s) of {slug} queued again')}")


def _policies(ctx: Ctx, admin: Admin, *, status: int = 200, **context: Any) -> Response:
    versions = views.policy_versions(ctx.session, admin=admin)
    if "text" not in context:  # the form starts from the document in force, when there is one
        documents = versions[0].documents if versions else []
        context.update(
            doc_name=documents[0]["name"] if len(documents) == 1 else "console.yaml",
            text=documents[0]["text"] if len(documents) == 1 else "",
            keep_others=len(documents) > 1,
        )
    return ctx.page("policies.html", admin=admin, status=status, title="Policies", section="policies",
                    versions=versions, **context)  # fmt: skip


@router.get("/policies")
def policies_page(ctx: CtxDep) -> Response:
    admin = ctx.admin()
    return _policies(ctx, admin)


@router.post("/policies/dry-run")
def policy_dry_run(
    ctx: CtxDep,
    csrf: Csrf = None,
    text: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "console.yaml",
    keep_others: Annotated[str | None, Form()] = None,
) -> Response:
    """`entente policy diff` on a pasted document (operators only): who would gain, lose or change access.

    Stored and decided in a transaction that is always rolled back: nothing applied, stored or queued."""
    check_csrf(ctx.state, csrf)
    admin = ctx.admin()
    admin.require_operator()
    name, keep = name.strip() or "console.yaml", keep_others == "yes"
    form: dict[str, Any] = {"doc_name": name, "text": text, "keep_others": keep}
    try:
        dry = checks.policy_dry_run(ctx.session, admin=admin, actor=ctx.actor(admin), name=name, text=text,
                                    keep_others=keep)  # fmt: skip
    except PolicyError as error:
        ctx.session.rollback()
        return _policies(ctx, admin, status=400, problems=error.problems, **form)
    return _policies(ctx, admin, dry=dry, **form)


@router.get("/people/{subject_id}")
def person_page(ctx: CtxDep, subject_id: str, message: str | None = None) -> Response:
    admin = ctx.admin()
    view = views.person(ctx.session, admin=admin, subject_id=subject_id)
    return ctx.page("person.html", admin=admin, title=view.user.user_name, section="partners", view=view,
                    message=message)  # fmt: skip


@router.get("/audit")
def audit_page(ctx: CtxDep, leaf: str = "") -> Response:
    """Recent records and the latest checkpoint; with ``leaf``, that record's inclusion proof, verified."""
    admin = ctx.admin()
    check = None
    if leaf.strip():
        if not (leaf.strip().isascii() and leaf.strip().isdigit()):
            raise InvalidValue("a leaf index is a whole number (0 or more)")
        check = checks.check_record(ctx.session, admin=admin, settings=ctx.settings, leaf_index=int(leaf))
    records, checkpoint, slugs = views.audit_page(ctx.session, admin=admin)
    leaves = checks.leaf_indices(ctx.session, [r.id for r in records if r.id is not None])
    return ctx.page("audit.html", admin=admin, title="Audit log", section="audit", records=records,
                    checkpoint=checkpoint, slugs=slugs, leaves=leaves, check=check, leaf=leaf.strip())  # fmt: skip


def _report_request(
    partner: Annotated[str, Query(max_length=64)] = "",
    workspace: Annotated[str, Query(max_length=64)] = "",
    inactive_days: Annotated[str, Query(max_length=6)] = "",
    silent_days: Annotated[str, Query(max_length=6)] = "",
    token_expiry_days: Annotated[str, Query(max_length=6)] = "",
    token_unused_days: Annotated[str, Query(max_length=6)] = "",
) -> checks.ReportRequest:
    return checks.ReportRequest(
        partner.strip(), workspace.strip(), inactive_days, silent_days, token_expiry_days, token_unused_days
    )


ReportDep = Annotated[checks.ReportRequest, Depends(_report_request)]
_DOWNLOADS = {"csv": (ReportFormat.CSV, "text/csv; charset=utf-8"), "jsonl": (ReportFormat.JSON, "application/jsonl")}


@router.get("/reports")
def reports_page(ctx: CtxDep, asked: ReportDep) -> Response:
    """The stale-access report of the admin's scope: counts per section (chart and table), first rows of each."""
    admin = ctx.admin()
    view = checks.stale_report(
        ctx.session, ctx.request.app.state.engine, admin=admin, settings=ctx.settings, asked=asked
    )
    return ctx.page("reports.html", admin=admin, title="Stale-access report", section="reports", view=view)


@router.get("/reports/stale.{ext}")
def report_download(ctx: CtxDep, ext: str, asked: ReportDep) -> Response:
    """The whole report as CSV or JSON Lines, streamed, scoped exactly like the page (and /api/reports/stale)."""
    admin = ctx.admin()
    if ext not in _DOWNLOADS:
        raise NotFound(f"no report format {ext!r} (csv or jsonl)")
    scope, options = checks.report_scope(ctx.session, admin=admin, settings=ctx.settings, asked=asked)
    ctx.session.rollback()  # the stream reads in its own snapshot; hold nothing meanwhile
    fmt, media = _DOWNLOADS[ext]
    rows = stale_access(ctx.request.app.state.engine, scope=scope, options=options)
    return StreamingResponse(
        render(rows, fmt),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="stale-access.{ext}"', **_NO_STORE},
    )


@router.get("/kill")
def kill_page(ctx: CtxDep, message: str | None = None) -> Response:
    admin = ctx.admin()
    visible = [p.partner for p in views.partners(ctx.session, admin=admin)]
    suspensions = [s for s in live_suspensions(ctx.session) if admin.sees_partner(s.partner_id)]
    ids = [s.subject_id for s in suspensions if s.subject_id]
    names = dict(ctx.session.exec(select(ScimUser.id, ScimUser.user_name).where(col(ScimUser.id).in_(ids))).all())
    slugs = {p.id: p.slug for p in visible}
    return ctx.page("kill.html", admin=admin, title="Kill switch", section="kill", partners=visible,
                    suspensions=suspensions, names=names, slugs=slugs, message=message)  # fmt: skip


@router.post("/kill")
def kill(
    ctx: CtxDep,
    partner: Annotated[str, Form()],
    reason: Annotated[str, Form()] = "",
    action: Annotated[str, Form()] = "suspend",
    person: Annotated[str, Form()] = "",
    confirm: Annotated[str | None, Form()] = None,
    csrf: Csrf = None,
) -> Response:
    """Suspend or lift, for a person or (operators) a whole partner; needs the confirmation box and a reason."""
    check_csrf(ctx.state, csrf)
    admin = ctx.admin()
    row = ctx.session.exec(select(Partner).where(Partner.slug == partner)).first()
    if row is None or not admin.sees_partner(row.id):
        raise NotFound(f"no partner {partner!r}")
    if not person.strip() and not admin.is_operator:
        raise Forbidden("only Entente's operators suspend a whole partner")
    if confirm != "yes":
        raise InvalidValue("tick the confirmation box: nothing was changed")
    if action not in ("suspend", "lift"):
        raise InvalidValue("unknown action")
    actor = ctx.actor(admin)
    if person.strip():
        operation = suspend_person if action == "suspend" else lift_person
        outcome = operation(ctx.session, partner_slug=partner, person=person, reason=reason, actor=actor)
        assert outcome.subject_id is not None
        verb = "suspended everywhere" if action == "suspend" else "suspension lifted"
        return ctx.redirect(f"/console/people/{outcome.subject_id}?message={quote(verb)}")
    if action == "suspend":
        outcome = suspend_partner(ctx.session, partner_slug=partner, reason=reason, actor=actor)
    else:
        outcome = lift_partner(ctx.session, partner_slug=partner, reason=reason, actor=actor)
    done = f"partner {partner}: {'suspended' if action == 'suspend' else 'lifted'}, {outcome.people} people re-decided"
    return ctx.redirect(f"/console/kill?message={quote(done)}")


@router.post(HOOK_PATH.removeprefix("/console"), include_in_schema=False)
async def account_hook(request: Request) -> Response:
    """Receiver of the console workspace's Standard Webhooks: verified, then ``unchanged`` (no accounts kept)."""
    body = await request.body()
    headers = {k.lower(): v for k, v in request.headers.items()}

    def check() -> bool:
        with Session(request.app.state.engine) as session:
            return verify_hook(session, settings=request.app.state.settings, headers=headers, body=body)

    if not await run_in_threadpool(check):
        return JSONResponse({"error": "invalid signature"}, status_code=401)
    return JSONResponse({"outcome": "unchanged", "remote_id": None})
