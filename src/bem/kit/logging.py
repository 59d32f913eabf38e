"""structlog JSON logging to stdout; stdlib loggers (uvicorn, sqlalchemy, alembic) go through it.

Request-scoped fields (``request_id``, later ``trace_id``) are bound with
``structlog.contextvars`` and appear on every line logged while the request runs.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor

_SECRET_KEYS = re.compile(r"(authorization|token|secret|password|cookie|otp|code)$", re.I)
_BEARER = re.compile(r"(bem_pat_)[A-Za-z0-9_-]+")


def _scrub(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Last line of defence: mask values of secret-looking keys and inline API tokens."""
    for key, value in list(event_dict.items()):
        if _SECRET_KEYS.search(key) and value is not None and key != "status_code":
            event_dict[key] = "***"
        elif isinstance(value, str) and "bem_pat_" in value:
            event_dict[key] = _BEARER.sub(r"\1***", value)
    return event_dict


def _trace_id(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """The current OpenTelemetry trace id, when a span is recording."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict["trace_id"] = format(context.trace_id, "032x")
    return event_dict


def configure_logging(level: str = "INFO", json: bool = True, stream: TextIO | None = None) -> None:
    """Servers log to stdout; one-off commands pass ``sys.stderr`` to keep stdout for
    their result (``TOKEN=$(bem users create-admin ...)``)."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        _trace_id,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _scrub,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's own access log is replaced by ours (one line per request, with request_id).
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").handlers[:] = []
    logging.getLogger("uvicorn.access").propagate = False


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger
