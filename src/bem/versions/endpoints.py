from __future__ import annotations

import base64
import uuid
from contextlib import nullcontext
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import FileResponse

from bem.auth.dependencies import Access, allow, user_key
from bem.auth.permissions import PROJECT_EDIT, PROJECT_READ
from bem.config import Settings
from bem.kit.cache import not_modified
from bem.kit.db import SessionDep
from bem.kit.errors import NotFound, problem_responses
from bem.kit.metrics import Metrics
from bem.kit.ndjson import JSON_TYPES, NDJSON_TYPES, iter_body, media_type
from bem.kit.pagination import CursorParam, LimitParam, Page
from bem.kit.ratelimit import Concurrency, rate_limit
from bem.kit.storage import SourceStore
from bem.kit.text import LongText, Text
from bem.projects import service as projects
from bem.versions import service
from bem.versions.models import Version
from bem.versions.schemas import VersionOut

router = APIRouter(prefix="/v1", tags=["versions"], responses=problem_responses(401, 403, 422))
Read = Annotated[Access, allow(PROJECT_READ)]

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


def _json(data: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), media_type="application/json", headers=headers)


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
    access: Annotated[Access, allow(PROJECT_EDIT)],
    message: Annotated[LongText | None, Query(description="What changed")] = None,
    source_name: Annotated[Text | None, Query(description="Original file name")] = None,
) -> Version:
    settings: Settings = request.app.state.settings
    assert access.principal is not None
    model = await projects.get_model(session, model_id)
    source = service.SourceHasher(request.stream())
    documents = iter_body(
        aiter(source),
        request.headers.get("content-type"),
        max_json_bytes=settings.max_json_body_bytes,
        max_ndjson_bytes=settings.max_ndjson_body_bytes,
        max_line_bytes=settings.max_line_bytes,
    )
    kind = media_type(request.headers.get("content-type"))
    meta = service.UploadMeta(
        source_format="ndjson" if kind in NDJSON_TYPES else "json",
        message=message,
        source_name=source_name,
        batch_size=settings.upload_batch_size,
    )
    concurrency: Concurrency | None = request.app.state.concurrency
    slot = (
        concurrency.slot(f"upload:{access.principal.user.id}", settings.max_concurrent_uploads)
        if concurrency is not None
        else nullcontext()
    )
    metrics: Metrics = request.app.state.metrics
    async with slot:
        try:
            version = await service.create_version(
                session, access.principal.user.id, model, documents, source, meta
            )
        except Exception:
            metrics.uploads.labels("failed").inc()
            raise
    metrics.uploads.labels("ready").inc()
    metrics.upload_elements.inc(version.element_count)
    return version


@router.get(
    "/models/{model_id}/versions",
    response_model=Page[VersionOut],
    responses=problem_responses(404),
    summary="Versions of a model, newest first",
)
async def list_versions(
    model_id: uuid.UUID,
    session: SessionDep,
    _: Read,
    cursor: CursorParam = None,
    limit: LimitParam = 100,
) -> Page[VersionOut]:
    model = await projects.get_model(session, model_id)
    rows, next_cursor = await service.list_versions(session, model, cursor, limit)
    return Page(items=[VersionOut.model_validate(v) for v in rows], next_cursor=next_cursor)


@router.get("/versions/{version_id}", response_model=VersionOut, responses=problem_responses(404))
async def get_version(version_id: uuid.UUID, session: SessionDep, _: Read) -> Version:
    return await service.get_version(session, version_id)


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
        304: {"description": "Not modified"},
        **problem_responses(404),
    },
    summary="Download the file a version was imported from",
)
async def get_source(
    version_id: uuid.UUID, request: Request, session: SessionDep, _: Read
) -> Response:
    version = await service.get_version(session, version_id)
    store: SourceStore = request.app.state.store
    key = version.source_key
    if key is None or version.source_sha256 is None or not store.exists(key):
        raise NotFound(
            f"Version {version_id} has no stored source file; only file imports "
            "(POST /v1/models/{model_id}/imports) keep the original."
        )
    etag = f'"{version.source_sha256}"'
    if cached := not_modified(request, etag):
        return cached
    digest = base64.b64encode(bytes.fromhex(version.source_sha256)).decode()
    return FileResponse(
        store.path(key),
        filename=version.source_name or f"{version_id}.{version.source_format}",
        media_type=SOURCE_MEDIA_TYPES.get(version.source_format, "application/octet-stream"),
        headers={"ETag": etag, "Repr-Digest": f"sha-256=:{digest}:"},
    )
