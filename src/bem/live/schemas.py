from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field

# Every kind of event BEM writes; webhooks may subscribe to a subset.
EventKind = Literal["model.created", "version.created", "job.succeeded", "job.failed"]


class EventOut(BaseModel):
    """One change, as the feed, the event list and webhooks carry it. ``id`` grows with
    every event of the server: pass the last one you saw as ``after`` to resume."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    project_id: uuid.UUID
    model_id: uuid.UUID | None
    data: dict[str, Any]
    created_at: datetime


class EventPage(BaseModel):
    items: list[EventOut]
    last_id: int = Field(description="Pass as `after` to get the events that follow.")


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Annotated[AnyHttpUrl, Field(description="Where events are POSTed (http or https).")]
    kinds: Annotated[
        list[EventKind],
        Field(max_length=10, description="Event kinds to send; empty sends every kind."),
    ] = []


class WebhookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    url: str
    kinds: list[str]
    active: bool
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="Signs every delivery (`BEM-Signature`); shown only in this answer."
    )


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    event_id: int
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    response_status: int | None
    error: str | None
    created_at: datetime
    due_at: datetime
    delivered_at: datetime | None
