"""`entente signals stream …`: the operator's view of Shared Signals streams (add, list, remove).

Receivers normally manage their own streams through the SSF API; the CLI is for setting one up on a
client's behalf, seeing every stream with what it still holds, and removing one.
"""

from __future__ import annotations

from typing import Annotated

import typer
from sqlmodel import Session

from broker.clikit import actor, fail, open_session
from broker.errors import BrokerError
from broker.settings import Settings
from broker.signals.discovery import poll_url
from broker.signals.models import SignalStream
from broker.signals.set import EVENTS_SUPPORTED
from broker.signals.streams import (
    POLL,
    PUSH,
    StreamChanges,
    add_stream,
    delete_stream,
    events_delivered,
    list_streams,
    pending_counts,
)

__all__ = ["signals_app"]

signals_app = typer.Typer(
    help="Shared Signals (SSF 1.0): CAEP/RISC event streams of workspaces' OIDC clients.", no_args_is_help=True
)
stream_app = typer.Typer(help="Event streams: where a client's SETs are pushed, or polled from.", no_args_is_help=True)
signals_app.add_typer(stream_app, name="stream")


def _endpoint(settings: Settings, stream: SignalStream) -> str:
    return (stream.endpoint_url or "") if stream.delivery_method == PUSH else poll_url(settings, stream.stream_id)


def _method(stream: SignalStream) -> str:
    return "push" if stream.delivery_method == PUSH else "poll"


@stream_app.command("add")
def stream_add(
    client_id: Annotated[str, typer.Argument(help="The receiving OIDC client (see `entente client list`).")],
    push: Annotated[str | None, typer.Option("--push", metavar="URL", help="Push SETs here (RFC 8935).")] = None,
    poll: Annotated[bool, typer.Option("--poll", help="The client polls for SETs (RFC 8936).")] = False,
    authorization_header: Annotated[
        str | None,
        typer.Option(
            envvar="ENTENTE_SSF_AUTHORIZATION_HEADER",
            help="Authorization header value pushes carry (sealed at rest; also from the environment).",
        ),
    ] = None,
    event: Annotated[
        list[str], typer.Option(help="Event type URI to deliver (repeatable; default: every supported one).")
    ] = [],  # noqa: B006
    description: Annotated[str | None, typer.Option(help="What the stream is for.")] = None,
) -> None:
    """Add a stream for a client: exactly one of --push URL or --poll."""
    if (push is None) == (not poll):
        raise typer.BadParameter("give exactly one of --push URL or --poll")
    settings = Settings()
    changes = StreamChanges(
        delivery_method=PUSH if push else POLL,
        endpoint_url=push,
        authorization_header=authorization_header if push else None,
        events_requested=tuple(event) or None,
        description=description,
    )
    with open_session(settings) as session:
        try:
            stream = add_stream(session, settings=settings, client_id=client_id, changes=changes, actor=actor())
        except BrokerError as error:
            fail(error)
    typer.echo(
        f"stream {stream.stream_id} added for client {client_id}: {_method(stream)} {_endpoint(settings, stream)}"
    )
    delivered = events_delivered(stream)
    typer.echo(f"events delivered: {' '.join(delivered) if delivered else 'none'}")
    unknown = [e for e in stream.events_requested if e not in EVENTS_SUPPORTED]
    if unknown:
        typer.echo(f"not supported, never delivered: {' '.join(unknown)}")


@stream_app.command("list")
def stream_list(
    client_id: Annotated[str | None, typer.Argument(help="Only this client's streams.")] = None,
) -> None:
    """Every stream: id, client, push/poll, endpoint, status, SETs not yet delivered, events delivered."""
    settings = Settings()
    with open_session(settings) as session:
        streams = list_streams(session, client_id=client_id)
        pending = pending_counts(session)
    for stream in streams:
        events = ",".join(e.rsplit("/", 1)[-1] for e in events_delivered(stream)) or "-"
        typer.echo(
            f"{stream.stream_id}\t{stream.client_id}\t{_method(stream)}\t{_endpoint(settings, stream)}\t"
            f"{stream.status}\tpending {pending.get(stream.stream_id, 0)}\t{events}"
        )


@stream_app.command("remove")
def stream_remove(stream_id: Annotated[str, typer.Argument(help="The stream to delete.")]) -> None:
    """Delete a stream and the SETs it still held."""
    settings = Settings()
    with open_session(settings) as session:
        try:
            dropped = delete_stream(session, client_id=_owner(session, stream_id), stream_id=stream_id, actor=actor())
        except BrokerError as error:
            fail(error)
    typer.echo(f"stream {stream_id} removed; {dropped} undelivered SET{'s' if dropped != 1 else ''} dropped")


def _owner(session: Session, stream_id: str) -> str:
    """The client of a stream, for the operator who names only the stream ('' if there is none)."""
    stream = session.get(SignalStream, stream_id) if len(stream_id) <= 36 else None
    return stream.client_id if stream is not None else ""
