from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bem.jobs.models import Job
from bem.kit.errors import FieldError

# Extraction is the first half of an import's percentage, storage the second.
PHASE_SPAN = {"extract": (0.0, 50.0), "store": (50.0, 50.0)}


class JobParams(BaseModel):
    """A job row's ``params``: what its handler reads, plus the request it came from (its id
    and trace context, so the worker's log lines and spans join the request's). Each kind
    subclasses it with its own input; rows stay flat JSON, so queued rows survive a deploy."""

    model_config = ConfigDict(frozen=True)

    request_id: str | None = None
    trace: dict[str, str] = {}
    source_name: str | None = None  # the file the job reads, shown on the job
    format: str | None = None


class JobProgress(BaseModel):
    phase: Literal["extract", "store"] | None
    done: int
    total: int | None
    percent: float
    elements_per_second: float | None


class JobError(BaseModel):
    type: str
    detail: str
    errors: list[FieldError] | None = Field(
        default=None,
        description="For an invalid upload, the first invalid fields (at most 20), each with "
        "its element's GlobalId.",
    )


class JobOut(BaseModel):
    id: uuid.UUID
    kind: str
    status: Literal["queued", "running", "succeeded", "failed"]
    model_id: uuid.UUID | None
    progress: JobProgress
    attempts: int
    max_attempts: int
    version_id: uuid.UUID | None
    error: JobError | None
    source_name: str | None
    source_format: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> JobOut:
        percent = 0.0
        if job.status == "succeeded":
            percent = 100.0
        elif job.phase in PHASE_SPAN and job.total:
            start, span = PHASE_SPAN[job.phase]
            percent = round(start + span * min(job.done / job.total, 1.0), 1)
        rate = None
        if job.started_at is not None and job.done:
            elapsed = ((job.finished_at or job.updated_at) - job.started_at).total_seconds()
            rate = round(job.done / elapsed, 1) if elapsed > 0 else None
        params = JobParams.model_validate(job.params)
        return cls(
            id=job.id,
            kind=job.kind,
            status=job.status,
            model_id=job.model_id,
            progress=JobProgress(
                phase=job.phase,
                done=job.done,
                total=job.total,
                percent=percent,
                elements_per_second=rate,
            ),
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            version_id=job.version_id,
            error=JobError(**job.error) if job.error else None,
            source_name=params.source_name,
            source_format=params.format,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
        )
