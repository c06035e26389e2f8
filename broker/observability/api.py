"""Operations endpoints: GET /metrics (Prometheus text format) and GET /readyz (readiness); their installation.

``/healthz`` (liveness: the process answers) stays in ``broker.main``; ``/readyz`` says whether this
process can do its work: the database answers ``SELECT 1`` and its schema is at the Alembic head
this code expects. A pod whose database is down or not yet migrated is taken out of the Service
instead of answering requests with errors.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from broker.observability.http import RequestObservabilityMiddleware
from broker.observability.metrics import CONTENT_TYPE, render
from broker.settings import Settings

__all__ = ["install_observability", "metrics_router", "readiness", "router"]

_ALEMBIC_DIR = Path(__file__).resolve().parents[2] / "alembic"
router = APIRouter(include_in_schema=False)
metrics_router = APIRouter(include_in_schema=False)


@lru_cache(maxsize=1)
def _expected_heads() -> frozenset[str]:
    """The head revisions of the migration scripts shipped with this code (read once per process)."""
    return frozenset(ScriptDirectory(str(_ALEMBIC_DIR)).get_heads())


def readiness(engine: Engine) -> str | None:
    """``None`` when the database answers and is migrated to head, else the reason it is not ready."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
            current = frozenset(MigrationContext.configure(connection).get_current_heads())
    except SQLAlchemyError as exc:
        return f"database unreachable: {type(exc).__name__}"
    expected = _expected_heads()
    if current != expected:
        have = ", ".join(sorted(current)) or "none"
        return f"database schema at revision {have}, expected {', '.join(sorted(expected))}: run `entente migrate`"
    return None


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    """200 when ready; 503 with ``{"status": "unavailable", "reason": ...}`` otherwise."""
    reason = await run_in_threadpool(readiness, request.app.state.engine)
    if reason is not None:
        return JSONResponse({"status": "unavailable", "reason": reason}, status_code=503)
    return JSONResponse({"status": "ready"})


@metrics_router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus exposition; the outbox gauges are counted in the database at this moment."""
    body = await run_in_threadpool(render, request.app.state.engine)
    return Response(body, media_type=CONTENT_TYPE)


def install_observability(app: FastAPI, settings: Settings) -> None:
    """Add the request middleware (request id, access log, SCIM counter), /readyz and, if enabled, /metrics."""
    app.add_middleware(RequestObservabilityMiddleware)
    app.include_router(router)
    if settings.metrics_enabled:
        app.include_router(metrics_router)
