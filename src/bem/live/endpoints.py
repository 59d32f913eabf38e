"""The change feed (event list, Server-Sent Events, WebSocket) and webhooks.

``bem gateway`` serves only this router (plus health and metrics); ``bem serve`` serves it
with everything else.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request, Response, WebSocket, status
from fastapi.requests import HTTPConnection
from fastapi.responses import StreamingResponse
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy.ext.asyncio import AsyncSession

from bem.auth.audit import origin_of
from bem.auth.dependencies import principal_for
from bem.auth.permissions import PROJECT_MANAGE, PROJECT_READ
from bem.events import service as events
from bem.kit.db import SessionDep, commit_early
from bem.kit.dberrors import as_problem
from bem.kit.errors import Problem, Unauthorized, Unprocessable, deny, problem_responses
from bem.kit.pagination import (
    INT64,
    CursorParam,
    InvalidCursor,
    LimitParam,
    Page,
    decode_cursor,
    page_of,
)
from bem.kit.state import AppState, state_of
from bem.live.hub import Ended, Heartbeat, Hub
from bem.live.schemas import (
    DeliveryOut,
    EventOut,
    EventPage,
    WebhookCreate,
    WebhookCreated,
    WebhookOut,
)
from bem.projects.access import ProjectAccess, access_project, authorize_project

router = APIRouter(prefix="/v1", tags=["live"], responses=problem_responses(401, 403, 404, 422))
ProjectReader = Annotated[ProjectAccess, access_project(PROJECT_READ)]
ProjectOwner = Annotated[ProjectAccess, access_project(PROJECT_MANAGE)]

# Browsers cannot set headers on a WebSocket: they may send the token as a subprotocol pair,
# ``new WebSocket(url, ["bem.bearer", token])``; the server answers with ``bem.bearer``.
WS_SUBPROTOCOL = "bem.bearer"
SSE_RETRY_MS = 3000
AfterParam = Annotated[
    int | None,
    Query(ge=0, le=INT64[1], description="Resume after this event id (default: only new events)."),
]


async def _reader(
    session: AsyncSession, state: AppState, secret: str, project_id: uuid.UUID
) -> None:
    """The credential still reads the project, else a problem (401, 403, 404)."""
    principal = await principal_for(state.settings, session, secret, state.memo)
    await authorize_project(session, principal, PROJECT_READ, project_id)
    await commit_early(session)  # the credential's last use, if it was noted


async def _still_allowed(state: AppState, secret: str, project_id: uuid.UUID) -> bool:
    """Re-checks a long-lived connection's credential and role (``Hub.follow`` asks)."""
    async with state.sessions() as session:
        try:
            await _reader(session, state, secret, project_id)
        except Problem:
            return False
    return True


def _hub(conn: HTTPConnection) -> Hub:
    return state_of(conn).resource(Hub)


@router.get(
    "/projects/{project_id}/events",
    response_model=EventPage,
    summary="A project's events, oldest first, after a cursor (polling)",
)
async def list_events(
    project_id: uuid.UUID,
    session: SessionDep,
    _: ProjectReader,
    after: Annotated[int, Query(ge=0, le=INT64[1], description="Events with a greater id.")] = 0,
    limit: LimitParam = 100,
) -> EventPage:
    rows = await events.events_after(session, after, limit, project_id)
    items = [EventOut.model_validate(row) for row in rows]
    return EventPage(items=items, last_id=items[-1].id if items else after)


def _sse(events: AsyncGenerator[EventOut | Heartbeat | Ended, None]) -> AsyncIterator[bytes]:
    async def frames() -> AsyncIterator[bytes]:
        yield f"retry: {SSE_RETRY_MS}\n\n".encode()
        async with aclosing(events):  # unsubscribes as soon as the client goes
            async for item in events:
                if isinstance(item, EventOut):
                    data = item.model_dump_json()
                    yield f"id: {item.id}\nevent: {item.kind}\ndata: {data}\n\n".encode()
                elif isinstance(item, Heartbeat):
                    yield b": keep-alive\n\n"
                else:
                    yield b"event: end\ndata: " + orjson.dumps({"reason": item.reason}) + b"\n\n"

    return frames()


@router.get(
    "/projects/{project_id}/events/stream",
    response_class=StreamingResponse,
    responses={
        200: {"description": "Server-Sent Events", "content": {"text/event-stream": {}}},
        **problem_responses(503),
    },
    summary="Follow a project's events (Server-Sent Events)",
    description="Each event comes as `id:` (its id), `event:` (its kind) and `data:` (the event "
    "as JSON). Reconnect with `Last-Event-ID` (or `after`) to resume without a gap; "
    "`: keep-alive` comments come when quiet. The stream ends with an `end` event when the "
    "server shuts down or the credential no longer allows reading the project.",
)
async def stream_events(
    project_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    _: ProjectReader,
    after: AfterParam = None,
    last_event_id: Annotated[str | None, Header(max_length=20)] = None,
) -> StreamingResponse:
    if last_event_id is not None:
        if not last_event_id.isdigit() or int(last_event_id) > INT64[1]:
            raise Unprocessable(
                "Last-Event-ID must be an event id.",
                slug="validation-error",
                parameter="Last-Event-ID",
            )
        after = int(last_event_id)
    await session.close()  # hold no database connection for the life of the stream
    secret = get_authorization_scheme_param(request.headers.get("authorization"))[1]
    hub = _hub(request)
    hub.admit()
    state = state_of(request)
    events = hub.follow(project_id, after, "sse", lambda: _still_allowed(state, secret, project_id))
    return StreamingResponse(
        _sse(events),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def _ws_secret(websocket: WebSocket) -> tuple[str | None, str | None]:
    """The bearer secret and the subprotocol to answer with."""
    scheme, secret = get_authorization_scheme_param(websocket.headers.get("authorization"))
    if secret and scheme.lower() == "bearer":
        return secret, None
    offered = websocket.scope.get("subprotocols") or []
    if len(offered) == 2 and offered[0] == WS_SUBPROTOCOL:
        return offered[1], WS_SUBPROTOCOL
    return None, None


@router.websocket("/projects/{project_id}/events/ws")
async def events_websocket(
    websocket: WebSocket, project_id: uuid.UUID, after: int | None = None
) -> None:
    """The same feed over a WebSocket: JSON messages ``{"type": "event", "event": {...}}``
    and ``{"type": "heartbeat"}``. Closes with 1012 when the server restarts and 1008 when
    the credential no longer allows reading the project; reconnect with ``after``."""
    secret, subprotocol = _ws_secret(websocket)
    hub, state = _hub(websocket), state_of(websocket)
    async with state.sessions() as session:
        try:
            if secret is None:
                raise Unauthorized()
            if after is not None and not 0 <= after <= INT64[1]:
                raise Unprocessable(
                    "after must be an event id.", slug="validation-error", parameter="after"
                )
            await _reader(session, state, secret, project_id)
            hub.admit()
        except Exception as exc:
            problem = exc if isinstance(exc, Problem) else as_problem(exc)
            if problem is None:
                raise
            await deny(websocket, problem)
            return
    await websocket.accept(subprotocol=subprotocol)
    events = hub.follow(
        project_id, after, "websocket", lambda: _still_allowed(state, secret, project_id)
    )

    async def pump() -> None:
        async for item in events:
            if isinstance(item, EventOut):
                await websocket.send_text(f'{{"type":"event","event":{item.model_dump_json()}}}')
            elif isinstance(item, Heartbeat):
                await websocket.send_text('{"type":"heartbeat"}')
            else:
                code = (
                    status.WS_1012_SERVICE_RESTART
                    if item.reason == Ended.SHUTDOWN
                    else status.WS_1008_POLICY_VIOLATION
                )
                await websocket.close(code=code, reason=item.reason)
                return

    async def until_closed() -> None:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass  # clients have nothing to say; their messages are ignored

    tasks = {asyncio.ensure_future(pump()), asyncio.ensure_future(until_closed())}
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await events.aclose()
    for task in done:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error


@router.post(
    "/projects/{project_id}/webhooks",
    status_code=status.HTTP_201_CREATED,
    response_model=WebhookCreated,
    responses=problem_responses(409),
    summary="Send a project's events to a URL",
    description="Each delivery is a POST of the event as JSON with headers `BEM-Event`, "
    "`BEM-Delivery` and `BEM-Signature: t=<unix time>,v1=<hex HMAC-SHA256 of "
    '"<t>." + body, keyed with the secret>`. Any 2xx answer is success; anything else is '
    "retried with backoff. The secret is shown only in this answer.",
)
async def create_webhook(
    project_id: uuid.UUID,
    data: WebhookCreate,
    request: Request,
    session: SessionDep,
    access: ProjectOwner,
) -> WebhookCreated:
    hook, secret = await events.create_webhook(
        session,
        state_of(request).settings,
        origin_of(request),
        access.principal.user.id,
        project_id,
        str(data.url),
        data.kinds,
    )
    return WebhookCreated(**WebhookOut.model_validate(hook).model_dump(), secret=secret)


@router.get(
    "/projects/{project_id}/webhooks",
    response_model=Page[WebhookOut],
    summary="A project's webhooks",
)
async def list_webhooks(
    project_id: uuid.UUID,
    session: SessionDep,
    _: ProjectOwner,
) -> Page[WebhookOut]:
    hooks = await events.webhooks_of(session, project_id)
    return Page(items=[WebhookOut.model_validate(h) for h in hooks])


@router.delete(
    "/projects/{project_id}/webhooks/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a webhook (pending deliveries are dropped)",
)
async def delete_webhook(
    project_id: uuid.UUID,
    webhook_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    access: ProjectOwner,
) -> None:
    await events.delete_webhook(
        session, origin_of(request), access.principal.user.id, project_id, webhook_id
    )


@router.get(
    "/projects/{project_id}/webhooks/{webhook_id}/deliveries",
    response_model=Page[DeliveryOut],
    summary="A webhook's delivery log, newest first",
)
async def list_deliveries(
    project_id: uuid.UUID,
    webhook_id: uuid.UUID,
    session: SessionDep,
    _: ProjectOwner,
    cursor: CursorParam = None,
    limit: LimitParam = 100,
) -> Page[DeliveryOut]:
    position = decode_cursor(cursor, 1)
    if position is not None and not isinstance(position[0], int):
        raise InvalidCursor()
    before = position[0] if position is not None else None
    rows = await events.list_deliveries(session, project_id, webhook_id, before, limit + 1)
    page, next_cursor = page_of(rows, limit, lambda d: [d.id])
    return Page(items=[DeliveryOut.model_validate(d) for d in page], next_cursor=next_cursor)
