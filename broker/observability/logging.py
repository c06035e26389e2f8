"""Structured logs: one JSON object per line (ts, level, logger, msg, request fields), or plain text.

Every record passes ``RequestContextFilter``, which copies the current request's ``request_id`` and
``partner`` (``broker.observability.http`` sets them) onto it, so any line logged while serving a
request can be joined with that request's access line and with the client's own logs.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import logging.config
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # kept light: spawned server processes import this module before their health check
    from broker.settings import Settings

__all__ = [
    "JsonFormatter",
    "RequestContext",
    "RequestContextFilter",
    "configure_logging",
    "current_request",
    "log_config",
    "request_context",
]

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s [request_id=%(request_id)s]"


@dataclass
class RequestContext:
    """What log lines of one request carry; mutable so the SCIM layer can name the partner once known."""

    request_id: str
    partner: str | None = None


request_context: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "entente_request_context", default=None
)


def current_request() -> RequestContext | None:
    """The request being served in this context, or ``None`` outside a request (the worker, the CLI)."""
    return request_context.get()


# Attributes every LogRecord has: anything else on a record came through ``extra=`` and is logged as a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's coloured duplicate of msg
}


class RequestContextFilter(logging.Filter):
    """Adds ``request_id`` and ``partner`` of the current request (``None`` outside one) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = request_context.get()
        if not hasattr(record, "request_id"):
            record.request_id = context.request_id if context is not None else None
        if not hasattr(record, "partner"):
            record.partner = context.partner if context is not None else None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``, then extra fields.

    Fields that are ``None`` are left out; values JSON cannot hold are written with ``str``; an
    exception is written as ``exc`` (the formatted traceback) so the line stays one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_") and value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def log_config(settings: Settings) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for this process and uvicorn's loggers (``uvicorn.run(log_config=)``).

    uvicorn applies it in every server process it starts, so workers log the same way; its own
    ``uvicorn.error`` and ``uvicorn.access`` loggers propagate to the one root handler on stderr.
    """
    formatter: dict[str, Any] = {"()": JsonFormatter} if settings.log_format == "json" else {"format": _TEXT_FORMAT}
    level = settings.log_level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request": {"()": RequestContextFilter}},
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "default",
                "filters": ["request"],
            }
        },
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": level, "propagate": True},
            # APScheduler logs every run of the per-second audit job at INFO: its failures are what matter.
            "apscheduler": {"handlers": [], "level": "WARNING", "propagate": True},
            # httpx logs every outgoing request at INFO (a tenth of an IdP token call's CPU); what Entente
            # sends is recorded where it matters (delivery attempts, audit). DEBUG shows them again.
            "httpx": {"handlers": [], "level": "DEBUG" if level == "DEBUG" else "WARNING", "propagate": True},
        },
        "root": {"handlers": ["default"], "level": level},
    }


def configure_logging(settings: Settings) -> None:
    """Apply ``log_config(settings)`` to this process (for processes uvicorn does not start: `entente worker`)."""
    logging.config.dictConfig(log_config(settings))
