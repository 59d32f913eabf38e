"""The import job's parameters."""

from __future__ import annotations

from bem.ingest.formats import Format
from bem.jobs.schemas import JobParams


class ImportParams(JobParams):
    """Which stored file to import (by SHA-256) and how to describe the version it makes."""

    sha256: str
    size: int
    format: Format
    message: str | None = None
