"""GET /api/reports/stale: the stale-access report streamed as CSV or JSON Lines.

Who may call, as for the audit API (``broker.audit.api.audit_reader``): an **operator** with the
token whose SHA-256 is ``ENTENTE_AUDIT_OPERATOR_TOKEN_SHA256`` reads every partner or the one it
names; a **partner** with one of its SCIM tokens reads only its own report (naming another partner
answers 404, as a missing one does).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from broker.audit.api import AuditReader, audit_reader
from broker.db import SessionDep
from broker.reports.render import ReportFormat, render
from broker.reports.runner import stale_access
from broker.reports.scope import ReportOptions, resolve_scope

__all__ = ["router"]

router = APIRouter(prefix="/api/reports", tags=["reports"])
ReaderDep = Annotated[AuditReader, Depends(audit_reader)]


class WireFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"


_MEDIA = {WireFormat.CSV: "text/csv; charset=utf-8", WireFormat.JSONL: "application/jsonl"}
_RENDER = {WireFormat.CSV: ReportFormat.CSV, WireFormat.JSONL: ReportFormat.JSON}


@router.get("/stale", response_class=StreamingResponse)
def get_stale_report(
    request: Request,
    reader: ReaderDep,
    session: SessionDep,
    partner: Annotated[str | None, Query(description="partner slug; a partner token may name only itself")] = None,
    workspace: Annotated[str | None, Query(description="workspace slug")] = None,
    format: Annotated[WireFormat, Query(description="csv, or jsonl (JSON Lines)")] = WireFormat.JSONL,
    inactive_days: Annotated[int | None, Query(ge=0, description="default ENTENTE_REPORT_INACTIVE_DAYS")] = None,
    silent_days: Annotated[int | None, Query(ge=0, description="default ENTENTE_REPORT_SILENT_FEED_DAYS")] = None,
    token_expiry_days: Annotated[int | None, Query(ge=0)] = None,
    token_unused_days: Annotated[int | None, Query(ge=0)] = None,
) -> StreamingResponse:
    """Orphaned accounts, inactive people, expired grants, pending revocations, silent feeds and SCIM tokens."""
    # resolved now, so an unknown slug is an error response and not a broken stream
    scope = resolve_scope(session, partner_slug=partner, workspace_slug=workspace, caller_partner_id=reader.partner_id)
    options = ReportOptions.from_settings(
        request.app.state.settings,
        inactive_days=inactive_days,
        silent_feed_days=silent_days,
        token_expiry_days=token_expiry_days,
        token_unused_days=token_unused_days,
    )
    session.rollback()  # the stream reads in its own snapshot; hold nothing meanwhile
    rows = stale_access(request.app.state.engine, scope=scope, options=options)
    filename = f"stale-access.{'csv' if format is WireFormat.CSV else 'jsonl'}"
    return StreamingResponse(
        render(rows, _RENDER[format]),
        media_type=_MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
