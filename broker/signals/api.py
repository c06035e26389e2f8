"""The Shared Signals HTTP edge: SSF 1.0 discovery and stream management, RFC 8936 polling.

    GET                    /.well-known/ssf-configuration   SSF §7 transmitter metadata
    POST|GET|PATCH|PUT|DELETE  /ssf/streams                 SSF §8.1.1 stream configuration
    GET|POST               /ssf/status                      SSF §8.1.2 stream status
    POST                   /ssf/verify                      SSF §8.1.4 verification event
    POST                   /ssf/poll/{stream_id}            RFC 8936 poll (long poll unless returnImmediately)

Every route but discovery authenticates the receiver first (broker.signals.auth) and only then
parses the JSON body. ``SignalsError`` becomes ``{"err", "description"}`` (RFC 8935 §2.3 style) here
and nowhere else, with ``WWW-Authenticate`` on 401 and ``Retry-After`` on 429. The router also runs
the push sender for the app's lifetime (``signals_sender``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager, suppress
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlmodel import Session

from broker.audit.log import Actor
from broker.provider.clients import RegisteredClient
from broker.settings import Settings
from broker.signals import emit
from broker.signals.auth import CHALLENGE, authenticate_receiver
from broker.signals.discovery import poll_url, transmitter_metadata
from broker.signals.errors import InvalidRequest, SignalsError, VerificationTooSoon
from broker.signals.models import SignalStream
from broker.signals.poll import MAX_EVENTS, PollResult, SetError, acknowledge, fetch
from broker.signals.push import SignalSender
from broker.signals.set import EVENTS_SUPPORTED, ssf_issuer
from broker.signals.streams import (
    PUSH,
    StreamChanges,
    add_stream,
    delete_stream,
    events_delivered,
    get_stream,
    list_streams,
    request_verification,
    set_status,
    update_stream,
)
from broker.threads import in_thread
from broker.types import utcnow

__all__ = ["router"]

MAX_BODY_BYTES = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store"}
T = TypeVar("T")
Work = Callable[[Session, RegisteredClient, bytes], T]


class _SignalsRoute(APIRoute):
    """Renders ``SignalsError`` as ``{"err", "description"}``; every other error goes to the app's handlers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except SignalsError as error:
                headers = dict(_NO_STORE)
                if error.status == 401:
                    headers["WWW-Authenticate"] = CHALLENGE
                if isinstance(error, VerificationTooSoon):
                    headers["Retry-After"] = str(error.retry_after)
                body = {"err": error.err, "description": error.detail}
                return JSONResponse(body, status_code=error.status, headers=headers)

        return route


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Run the push sender beside the app (after create_app's lifespan has started)."""
    settings: Settings = app.state.settings
    if not settings.signals_sender:
        yield
        return
    stop = asyncio.Event()
    task = asyncio.create_task(SignalSender(engine=app.state.engine, settings=settings).run(stop))
    try:
        yield
    finally:
        stop.set()
        await task


router = APIRouter(lifespan=_lifespan, route_class=_SignalsRoute, tags=["shared signals"])


# -- wire shapes (SSF §8.1.1, RFC 8936 §2.4): transmitter-supplied members a receiver echoes are ignored
class _Delivery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    method: str
    endpoint_url: str | None = None
    authorization_header: str | None = None


class _StreamIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    stream_id: str | None = None
    delivery: _Delivery | None = None
    events_requested: list[str] | None = None
    description: str | None = None

    def changes(self) -> StreamChanges:
        delivery = self.delivery
        return StreamChanges(
            delivery_method=delivery.method if delivery else None,
            endpoint_url=delivery.endpoint_url if delivery else None,
            authorization_header=delivery.authorization_header if delivery else None,
            events_requested=tuple(self.events_requested) if self.events_requested is not None else None,
            description=self.description,
        )


class _StatusIn(BaseModel):
    stream_id: str
    status: str
    reason: str | None = None


class _VerifyIn(BaseModel):
    stream_id: str
    state: str | None = None


class _SetErr(BaseModel):
    err: str = Field(max_length=64)
    description: str = Field(default="", max_length=1000)


class _PollIn(BaseModel):
    max_events: int | None = Field(default=None, ge=0, alias="maxEvents")
    return_immediately: bool = Field(default=False, alias="returnImmediately")
    ack: list[str] = Field(default_factory=list, max_length=1000)
    set_errs: dict[str, _SetErr] = Field(default_factory=dict, alias="setErrs", max_length=1000)


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], body: bytes) -> M:
    """The JSON body as ``model``; anything else is ``InvalidRequest`` naming the first problem."""
    try:
        return model.model_validate_json(body or b"{}")
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise InvalidRequest(f"{where}: {first.get('msg', 'invalid')}") from None


def _config(settings: Settings, stream: SignalStream) -> dict[str, Any]:
    """The SSF §8.1.1 stream configuration object (never the push ``authorization_header``)."""
    url = stream.endpoint_url if stream.delivery_method == PUSH else poll_url(settings, stream.stream_id)
    config: dict[str, Any] = {
        "stream_id": stream.stream_id,
        "iss": ssf_issuer(settings),
        "aud": stream.client_id,
        "delivery": {"method": stream.delivery_method, "endpoint_url": url},
        "events_supported": list(EVENTS_SUPPORTED),
        "events_requested": list(stream.events_requested),
        "events_delivered": events_delivered(stream),
        "min_verification_interval": settings.signals_min_verification_interval_seconds,
    }
    if stream.description is not None:
        config["description"] = stream.description
    return config


def _status(stream: SignalStream) -> dict[str, Any]:
    status: dict[str, Any] = {"stream_id": stream.stream_id, "status": stream.status}
    if stream.status_reason is not None:
        status["reason"] = stream.status_reason
    return status


def _actor(client: RegisteredClient) -> Actor:
    return Actor(kind="oidc_client", id=client.client_id)


async def _run(request: Request, work: Work[T]) -> T:
    """Read the body (bounded), then in one thread with one session: authenticate, and ``work``."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        raise InvalidRequest("the request body is too large")
    engine = request.app.state.engine
    authorization = request.headers.get("authorization")

    def run() -> T:
        with Session(engine, expire_on_commit=False) as session:
            client = authenticate_receiver(session, authorization=authorization)
            return work(session, client, body)

    return await in_thread(request.app.state, run)


def _json(body: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=_NO_STORE)


def _required(request: Request, name: str) -> str:
    value = request.query_params.get(name)
    if not value:
        raise InvalidRequest(f"the {name} query parameter is required")
    return value


@router.get("/.well-known/ssf-configuration")
async def configuration(request: Request) -> Response:
    return JSONResponse(transmitter_metadata(request.app.state.settings), headers={"Cache-Control": "max-age=3600"})


@router.post("/ssf/streams")
async def create(request: Request) -> Response:
    settings: Settings = request.app.state.settings

    def work(session: Session, client: RegisteredClient, body: bytes) -> dict[str, Any]:
        changes = _parse(_StreamIn, body).changes()
        stream = add_stream(
            session, settings=settings, client_id=client.client_id, changes=changes, actor=_actor(client)
        )
        return _config(settings, stream)

    return _json(await _run(request, work), 201)


@router.get("/ssf/streams")
async def read(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    stream_id = request.query_params.get("stream_id")

    def work(session: Session, client: RegisteredClient, _body: bytes) -> Any:
        if stream_id:
            return _config(settings, get_stream(session, client_id=client.client_id, stream_id=stream_id))
        return [_config(settings, s) for s in list_streams(session, client_id=client.client_id)]

    return _json(await _run(request, work))


async def _update(request: Request, *, replace: bool) -> Response:
    settings: Settings = request.app.state.settings

    def work(session: Session, client: RegisteredClient, body: bytes) -> dict[str, Any]:
        parsed = _parse(_StreamIn, body)
        if not parsed.stream_id:
            raise InvalidRequest("stream_id is required")
        stream = update_stream(
            session,
            settings=settings,
            client_id=client.client_id,
            stream_id=parsed.stream_id,
            changes=parsed.changes(),
            replace=replace,
            actor=_actor(client),
        )
        return _config(settings, stream)

    return _json(await _run(request, work))


@router.patch("/ssf/streams")
async def update(request: Request) -> Response:
    return await _update(request, replace=False)


@router.put("/ssf/streams")
async def replace(request: Request) -> Response:
    return await _update(request, replace=True)


@router.delete("/ssf/streams")
async def remove(request: Request) -> Response:
    def work(session: Session, client: RegisteredClient, _body: bytes) -> None:
        delete_stream(
            session, client_id=client.client_id, stream_id=_required(request, "stream_id"), actor=_actor(client)
        )

    await _run(request, work)
    return Response(status_code=204, headers=_NO_STORE)


@router.get("/ssf/status")
async def read_status(request: Request) -> Response:
    def work(session: Session, client: RegisteredClient, _body: bytes) -> dict[str, Any]:
        return _status(get_stream(session, client_id=client.client_id, stream_id=_required(request, "stream_id")))

    return _json(await _run(request, work))


@router.post("/ssf/status")
async def update_status(request: Request) -> Response:
    def work(session: Session, client: RegisteredClient, body: bytes) -> dict[str, Any]:
        parsed = _parse(_StatusIn, body)
        stream = set_status(
            session,
            client_id=client.client_id,
            stream_id=parsed.stream_id,
            status=parsed.status,
            reason=parsed.reason,
            actor=_actor(client),
        )
        return _status(stream)

    return _json(await _run(request, work))


@router.post("/ssf/verify")
async def verify(request: Request) -> Response:
    settings: Settings = request.app.state.settings

    def work(session: Session, client: RegisteredClient, body: bytes) -> None:
        parsed = _parse(_VerifyIn, body)
        request_verification(
            session, settings=settings, client_id=client.client_id, stream_id=parsed.stream_id, state=parsed.state
        )

    await _run(request, work)
    return Response(status_code=204, headers=_NO_STORE)


def _poll_body(result: PollResult) -> dict[str, Any]:
    return {"sets": result.sets, "moreAvailable": result.more_available}


@router.post("/ssf/poll/{stream_id}")
async def poll(request: Request, stream_id: str) -> Response:
    """Acknowledge, then answer at once if SETs wait (or ``returnImmediately``); else wait for some."""
    settings: Settings = request.app.state.settings
    engine = request.app.state.engine

    def first(session: Session, client: RegisteredClient, body: bytes) -> tuple[str, int, bool, PollResult]:
        parsed = _parse(_PollIn, body)
        stream = get_stream(session, client_id=client.client_id, stream_id=stream_id)
        if stream.delivery_method == PUSH:
            raise InvalidRequest("this stream delivers by push (RFC 8935); it has nothing to poll")
        errors = {jti: SetError(e.err, e.description) for jti, e in parsed.set_errs.items()}
        acknowledge(session, stream=stream, ack=parsed.ack, set_errs=errors, now=utcnow())
        max_events = MAX_EVENTS if parsed.max_events is None else parsed.max_events
        result = fetch(session, settings=settings, stream=stream, max_events=max_events)
        session.commit()
        return client.client_id, max_events, parsed.return_immediately, result

    client_id, max_events, immediately, result = await _run(request, first)
    if result.sets or immediately or max_events == 0:
        return _json(_poll_body(result))

    def again() -> PollResult:
        with Session(engine, expire_on_commit=False) as session:
            stream = get_stream(session, client_id=client_id, stream_id=stream_id)
            found = fetch(session, settings=settings, stream=stream, max_events=max_events)
            session.commit()
            return found

    return _json(_poll_body(await _long_poll(request, again) or result))


async def _long_poll(request: Request, again: Callable[[], PollResult]) -> PollResult | None:
    """Call ``again`` whenever a local commit queues SETs (or each poll interval) until it finds some or
    ``signals_poll_wait_seconds`` pass; ``None`` if none came."""
    settings: Settings = request.app.state.settings
    loop = asyncio.get_running_loop()
    woken = asyncio.Event()

    def wake() -> None:
        loop.call_soon_threadsafe(woken.set)

    deadline = time.monotonic() + settings.signals_poll_wait_seconds
    emit.subscribe(wake)
    try:
        while (left := deadline - time.monotonic()) > 0:
            woken.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(woken.wait(), timeout=min(left, settings.delivery_poll_seconds))
            found = await in_thread(request.app.state, again)
            if found.sets:
                return found
    finally:
        emit.unsubscribe(wake)
    return None
