"""Error tracking with sentry-sdk (Sentry, GlitchTip and other compatible servers).

Only unexpected errors are reported: the request-context middleware captures an unhandled
exception once, with the request id as a tag, and a job reports each attempt that failed
unexpectedly, with the id of the request that enqueued it; 4xx problems (and files refused
as bad input) are answers, not errors. Default integrations stay off, so the same failure
is not reported again through logging or the framework. Every event passes through
:func:`scrub` before it leaves the process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sentry_sdk

from bem.config import Settings
from bem.kit.build import Build
from bem.kit.scrub import MASK, ONE_TIME_CODE, SECRET_TEXT, mask_text, secret_key

REPORTED_TEXT = (*SECRET_TEXT, ONE_TIME_CODE)  # exception messages may quote a code


def _scrub_value(value: Any, key: str = "") -> Any:
    if key and secret_key(key) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return mask_text(value, REPORTED_TEXT)
    if isinstance(value, dict):
        return {k: _scrub_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        # Header lists come as [name, value] pairs.
        if len(value) == 2 and isinstance(value[0], str) and secret_key(value[0]):
            return [value[0], MASK]
        return [_scrub_value(v) for v in value]
    return value


def scrub(event: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
    """``before_send``: mask tokens, cookies, codes and email addresses anywhere in the event
    (request data, headers, exception messages, local variables)."""
    scrubbed: dict[str, Any] = _scrub_value(event)
    scrubbed.get("request", {}).pop("cookies", None)
    return scrubbed


def init_error_tracking(settings: Settings, build: Build) -> None:
    """Report to ``BEM_SENTRY_DSN`` from this process (the API, gateway or worker); a no-op
    without one."""
    if settings.sentry_dsn is None:
        return
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        release=build.version,
        environment=settings.profile.value,
        default_integrations=False,
        include_local_variables=False,
        include_source_context=False,
        before_send=scrub,  # type: ignore[arg-type]
        shutdown_timeout=2,
    )
    sentry_sdk.get_global_scope().set_tag("commit", build.commit)


def report_exception(
    exc: BaseException, tags: Mapping[str, str | None], **contexts: dict[str, Any]
) -> None:
    """Send one event for an unexpected exception, with ``tags`` (``request_id`` at least:
    the reference the client was given) and named contexts; a no-op when tracking is off."""
    if sentry_sdk.get_client().is_active():
        with sentry_sdk.new_scope() as scope:
            for name, value in tags.items():
                if value is not None:
                    scope.set_tag(name, value)
            for name, context in contexts.items():
                scope.set_context(name, context)
            sentry_sdk.capture_exception(exc)
