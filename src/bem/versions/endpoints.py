from __future__ import annotations

import base64
import uuid
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import FileResponse

from bem.auth.dependencies import user_key
from bem.auth.permissions import PROJECT_EDIT, PROJECT_READ
from bem.kit.cache import not_modified
from bem.kit.db import SessionDep
from bem.kit.errors import problem_responses
from bem.kit.ndjson import JSON_TYPES, NDJSON_TYPES
from bem.kit.pagination import CursorParam, LimitParam, Page
from bem.kit.ratelimit import concurrency_slot, rate_limit
from bem.kit.state import StateDep, StoreDep
from bem.kit.text import LongText, Text
from bem.projects.access import ModelAccess, access_model
from bem.versions import service
from bem.versions.access import VersionAccess, access_version
from bem.versions.models import Version
from bem.versions.schemas import VersionOut

router = APIRouter(prefix="/v1", tags=["versions"], responses=problem_responses(401, 403, 422))
Read = Annotated[VersionAccess, access_version(PROJECT_READ)]
# After the model's authorization (a parameter after it): a refused caller takes no slot.
UploadSlot = Annotated[
    None, concurrency_slot("upload", lambda settings: settings.max_concurrent_uploads, user_key)
]

_ELEMENT_ARRAY = {"type": "array", "items": {"$ref": "#/components/schemas/ElementIn"}}
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": 'Elements as a JSON array (or `{"elements": [...]}`), or NDJSON with '
        "one element per line. NDJSON is streamed and suits large models.",
        "content": {
            **{t: {"schema": _ELEMENT_ARRAY} for t in JSON_TYPES},
            **{t: {"schema": {"$ref": "#/components/schemas/ElementIn"}} for t in NDJSON_TYPES},
        },
    }
}


@router.post(
    "/models/{model_id}/versions",
    status_code=status.HTTP_201_CREATED,
    response_model=VersionOut,
    responses=problem_responses(400, 404, 413, 415, 429),
    openapi_extra=UPLOAD_BODY,
    dependencies=[rate_limit("upload", by=user_key)],
    summary="Upload elements as a new immutable version",
)
async def create_version(
    model_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    state: StateDep,
    access: Annotated[ModelAccess, access_model(PROJECT_EDIT)],
    _: UploadSlot,
    message: Annotated[LongText | None, Query(description="What changed")] = None,
    source_name: Annotated[Text | None, Query(description="Original file name")] = None,
) -> Version:
    return await service.receive_upload(
        session,
        state.settings,
        state.metrics,
        access.model,
        access.principal.user.id,
        request.stream(),
        request.headers.get("content-type"),
        message=message,
        source_name=source_name,
    )


@router.get(
    "/models/{model_id}/versions",
    response_model=Page[VersionOut],
    responses=problem_responses(404),
    summary="Versions of a model, newest first",
)
async def list_versions(
    model_id: uuid.UUID,
    session: SessionDep,
    access: Annotated[ModelAccess, access_model(PROJECT_READ)],
    cursor: CursorParam = None,
    limit: LimitParam = 100,
) -> Page[VersionOut]:
    rows, next_cursor = await service.list_versions(session, access.model, cursor, limit)
    return Page(items=[VersionOut.model_validate(v) for v in rows], next_cursor=next_cursor)


@router.get("/versions/{version_id}", response_model=VersionOut, responses=problem_responses(404))
async def get_version(version_id: uuid.UUID, access: Read) -> Version:
    return access.version


SOURCE_MEDIA_TYPES = {
    "ifc": "application/x-step",
    "ifczip": "application/zip",
    "dxf": "image/vnd.dxf",
    "ndjson": "application/x-ndjson",
    "json": "application/json",
}


@router.get(
    "/versions/{version_id}/source",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The original file, byte for byte",
            "content": {t: {} for t in dict.fromkeys(SOURCE_MEDIA_TYPES.values())},
            "headers": {
                "Repr-Digest": {"description": "sha-256 of the file (RFC 9530)"},
                "ETag": {"description": "The file's SHA-256, quoted"},
            },
        },
        206: {"description": "The requested byte range (`Range`)"},
        304: {"description": "Not modified"},
        **problem_responses(404, 416),
    },
    summary="Download the file a version was imported from",
)
async def get_source(
    version_id: uuid.UUID, request: Request, store: StoreDep, access: Read
) -> Response:
    version = access.version
    key = await anyio.to_thread.run_sync(service.stored_source, store, version)
    assert version.source_sha256 is not None
    etag = f'"{version.source_sha256}"'
    if cached := not_modified(request, etag):
        return cached
    digest = base64.b64encode(bytes.fromhex(version.source_sha256)).decode()
    return await anyio.to_thread.run_sync(
        store.response,
        key,
        version.source_name or f"{version_id}.{version.source_format}",
        SOURCE_MEDIA_TYPES.get(version.source_format, "application/octet-stream"),
        {"ETag": etag, "Repr-Digest": f"sha-256=:{digest}:"},
        request.headers.get("range"),
    )
