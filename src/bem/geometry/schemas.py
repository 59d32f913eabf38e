from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from bem.jobs.schemas import JobError, JobParams

GeometryStatus = Literal["none", "queued", "running", "ready", "failed"]


class GeometryParams(JobParams):
    """Which version's stored IFC file to turn into a GLB."""

    version_id: uuid.UUID
    sha256: str


class GeometryOut(BaseModel):
    status: GeometryStatus = Field(
        description="`none`: never requested (not an IFC version, or imported before "
        "geometry was made); `queued`/`running`: its job; `ready`: download it; `failed`: "
        "the job's error says why (the version itself is unaffected)."
    )
    job_id: uuid.UUID | None = None
    url: str | None = Field(default=None, description="The GLB, once ready")
    sha256: str | None = None
    bytes: int | None = None
    elements: int | None = Field(default=None, description="Nodes: elements with a shape")
    meshes: int | None = Field(default=None, description="Distinct meshes (shared ones once)")
    requested_at: datetime | None = None
    made_at: datetime | None = None
    error: JobError | None = None
