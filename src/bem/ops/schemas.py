from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class BackupOut(BaseModel):
    """A backup: asked for, running, or done with where it went and how it was checked."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status: Literal["requested", "running", "succeeded", "failed"]
    origin: str = Field(description="cli, drill, api or schedule")
    requested_at: datetime
    requested_by: uuid.UUID | None
    started_at: datetime | None
    finished_at: datetime | None
    location: str | None = Field(description="The backup directory, or its s3:// location")
    bytes: int | None
    tables: int | None
    rows: int | None
    error: str | None
    verification: Literal["unverified", "archive", "restore"] = Field(
        description="archive: the sealed archive was opened and checked against its "
        "manifest; restore: a drill restored it and every table and answer matched"
    )
    verified_at: datetime | None
