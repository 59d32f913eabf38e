"""structlog JSON logging to stdout; stdlib loggers (uvicorn, sqlalchemy, alembic) go through it.

Request-scoped fields (``request_id``, later ``trace_id``) are bound with
``structlog.contextvars`` and appear on every line logged while the request runs.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from opentelemetry import trace
from structlog.typing import EventDict, Processor

from bem.kit.scrub import MASK, mask_text, secret_key


def _scrub(_: Any, __: str, event_dict: EventDict) -> EventDict:
    """Last line of defence (``kit/scrub.py``, the list error reports use too): mask values
    of secret-looking keys, and tokens, JWTs and email addresses in any text, the rendered
    exception included."""
    for key, value in list(event_dict.items()):
        if secret_key(key) and value is not None:
            event_dict[key] = MASK
        elif isinstance(value, str):
            event_dict[key] = mask_text(value)
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
            _scrub,  # after the traceback is text: exception messages carry secrets too
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
