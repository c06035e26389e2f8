"""create_app(settings) -> the FastAPI application: routers, error edges, database engine."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from broker.audit.api import router as audit_router
from broker.console.api import error_page as console_error_page
from broker.console.api import router as console_router
from broker.db import create_db_engine, is_sqlite
from broker.errors import BrokerError, InvalidValue, NotFound
from broker.federation.api import router as login_router
from broker.federation.cache import adapter_cache
from broker.lifecycle.scheduler import start_scheduler, stop_scheduler
from broker.lifecycle.worker import DeliveryWorker
from broker.observability.api import install_observability
from broker.provider.api import router as provider_router
from broker.reports.api import router as reports_router
from broker.scim.api import error_response
from broker.scim.api import router as scim_router
from broker.settings import Settings, get_settings
from broker.signals.api import router as signals_router
from broker.threads import shut_down_request_threads

__all__ = ["app_from_environment", "create_app", "switch_interval_seconds"]

log = logging.getLogger("entente")
_SCIM_PREFIXES = ("/scim/v2", "/scim")


def _is_scim(request: Request) -> bool:
    return request.url.path.startswith("/scim")


def _render(request: Request, error: BrokerError) -> Response:
    if _is_scim(request):
        return error_response(error)
    if request.url.path.startswith("/console"):
        return console_error_page(request, error)
    return JSONResponse({"error": type(error).__name__, "detail": error.detail}, status_code=error.status)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; the engine is created here and disposed at shutdown."""
    settings = settings or get_settings()
    engine = create_db_engine(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        scheduler = start_scheduler(engine, settings) if settings.delivery_worker else None
        delivery = (
            asyncio.create_task(DeliveryWorker(engine=engine, settings=settings).run(stop))
            if settings.delivery_worker
            else None
        )
        try:
            yield
        finally:
            stop.set()
            if scheduler is not None:
                await stop_scheduler(scheduler)
            if delivery is not None:
                await delivery
            await adapter_cache(app.state).aclose()
            shut_down_request_threads(app.state)
            engine.dispose()

    app = FastAPI(title="Entente", version="0.1.0", lifespan=lifespan, docs_url="/api/docs", redoc_url=None)
    app.state.settings = settings
    app.state.engine = engine
    install_observability(app, settings)
    # Starlette tries routes in order, a few microseconds each: the busiest first (SCIM feeds, then the
    # provider and login that every sign-in and refresh crosses), the /scim alias after them.
    app.include_router(scim_router, prefix=_SCIM_PREFIXES[0])
    app.include_router(provider_router)
    app.include_router(login_router)
    for prefix in _SCIM_PREFIXES[1:]:
        app.include_router(scim_router, prefix=prefix, include_in_schema=False)
    app.include_router(audit_router)
    app.include_router(console_router)
    app.include_router(reports_router)
    app.include_router(signals_router)

    @app.exception_handler(BrokerError)
    async def broker_error(request: Request, exc: BrokerError) -> Response:
        return _render(request, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        location = ".".join(str(p) for p in first.get("loc", ()))
        return _render(request, InvalidValue(f"{location}: {first.get('msg', 'invalid request')}"))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return _render(request, NotFound(f"no such endpoint: {request.method} {request.url.path}"))
        error = BrokerError(str(exc.detail))
        if _is_scim(request):
            body = {
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                "status": str(exc.status_code),
                "detail": str(exc.detail),
            }
            return JSONResponse(
                body, status_code=exc.status_code, media_type="application/scim+json", headers=exc.headers
            )
        return JSONResponse({"error": type(error).__name__, "detail": error.detail}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _render(request, BrokerError("internal error; the change was not applied"))

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def app_from_environment() -> FastAPI:
    """Factory for `entente serve`: each worker process builds its app from the environment."""
    settings = Settings()
    sys.setswitchinterval(switch_interval_seconds(settings))
    return create_app(settings)


def switch_interval_seconds(settings: Settings) -> float:
    """``thread_switch_interval_ms``, or its default for the database (see Settings)."""
    if settings.thread_switch_interval_ms is not None:
        return settings.thread_switch_interval_ms / 1000
    return 0.005 if is_sqlite(settings.database_url) else 0.0005
