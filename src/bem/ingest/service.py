"""Accepting a file for import: the checks that need no parsing, storage, and the job."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import IO

import anyio.to_thread
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import UploadFile

from bem.config import Settings
from bem.ingest.formats import HEAD_BYTES, BadSource, Format, detect, extract_ifc, ifc_member
from bem.ingest.schemas import ImportParams
from bem.jobs import service as jobs
from bem.jobs.models import Job
from bem.kit.errors import PayloadTooLarge
from bem.kit.state import AppState
from bem.kit.storage import SourceStore, open_store
from bem.projects.models import Model


def store_source(
    store: SourceStore, filename: str, file: IO[bytes], max_bytes: int
) -> tuple[Format, str, int]:
    """Detect the format (extension + first bytes), vet archives, then keep the file.
    Synchronous: run it in a thread from async code. Returns (format, key, size)."""
    if file.seek(0, os.SEEK_END) > max_bytes:
        raise PayloadTooLarge(f"The file exceeds {max_bytes} bytes.", limit=max_bytes)
    file.seek(0)
    fmt = detect(filename, file.read(HEAD_BYTES))
    if fmt is Format.ifczip:
        ifc_member(file, max_bytes)
    key, size = store.put(file)
    return fmt, key, size


def ifc_file(store: SourceStore, key: str, fmt: str, workdir: Path, max_bytes: int) -> Path:
    """A local IFC file with a stored IFC or IFC-ZIP source's model (for jobs that read it
    again: geometry). Blocking. A file gone from the store is bad input, not a retry."""
    if not store.exists(key):
        raise BadSource("The stored file is missing.", slug="source-missing")
    path = store.local_file(key, workdir)
    if Format(fmt) is Format.ifczip:
        unpacked = workdir / "model.ifc"
        extract_ifc(path, unpacked, max_bytes)
        return unpacked
    return path


async def accept_import(
    session: AsyncSession,
    state: AppState,
    model: Model,
    user_id: uuid.UUID,
    file: UploadFile,
    message: str | None,
) -> Job:
    """An uploaded file, checked and stored, as a queued import job of ``model``."""
    name = file.filename or ""
    settings = state.settings
    source = await anyio.to_thread.run_sync(
        store_source, state.store, name, file.file, settings.max_import_bytes
    )
    job = await create_import_job(
        session,
        settings,
        model_id=model.id,
        created_by=user_id,
        source=source,
        filename=name,
        message=message,
    )
    await jobs.submit(session, state.job_queue, job)
    return job


async def import_path(
    session: AsyncSession,
    settings: Settings,
    *,
    model_id: uuid.UUID,
    path: Path,
    message: str | None,
    created_by: uuid.UUID | None = None,
) -> Job:
    """A local file as a queued import job (``bem import``, the ingest benchmark)."""
    store = open_store(settings)
    with path.open("rb") as file:
        source = await anyio.to_thread.run_sync(
            store_source, store, path.name, file, settings.max_import_bytes
        )
    return await create_import_job(
        session,
        settings,
        model_id=model_id,
        created_by=created_by,
        source=source,
        filename=path.name,
        message=message,
    )


async def create_import_job(
    session: AsyncSession,
    settings: Settings,
    *,
    model_id: uuid.UUID,
    created_by: uuid.UUID | None,
    source: tuple[Format, str, int],
    filename: str,
    message: str | None,
) -> Job:
    fmt, key, size = source
    return await jobs.create_job(
        session,
        kind="import",
        model_id=model_id,
        created_by=created_by,
        params=ImportParams(
            sha256=key, size=size, format=fmt, source_name=filename[-255:] or None, message=message
        ),
        max_attempts=settings.job_max_attempts,
    )
