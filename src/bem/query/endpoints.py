from __future__ import annotations

import uuid
from contextlib import nullcontext
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Path, Query, Request, Response

from bem.auth.dependencies import Access, allow, user_key
from bem.auth.permissions import PROJECT_READ
from bem.kit.cache import CACHE_CONTROL, key_of, lookup, validators
from bem.kit.db import SessionDep
from bem.kit.errors import problem_responses
from bem.kit.pagination import CursorParam, LimitParam, Page
from bem.kit.ratelimit import Concurrency, rate_limit
from bem.query import service, traversal
from bem.query import takeoff as takeoffs
from bem.query.schemas import QueryIn
from bem.versions import service as versions
from bem.versions.schemas import GLOBAL_ID_PATTERN, ElementOut, RelationKind

router = APIRouter(prefix="/v1", tags=["query"], responses=problem_responses(401, 403, 422))
# A version's elements, listed (with a selector) or one by one: included right after the
# versions router, whose sub-resources they are.
elements_router = APIRouter(
    prefix="/v1", tags=["versions"], responses=problem_responses(401, 403, 422)
)
Read = Annotated[Access, allow(PROJECT_READ)]
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified (`If-None-Match` holds the ETag)"}
}


FieldsParam = Annotated[
    str | None,
    Query(
        max_length=2000,
        description="Comma-separated parts of each element to return, e.g. "
        "`name,ifc_class,properties.Pset_WallCommon`; `global_id` is always included.",
    ),
]
SelectorParam = Annotated[
    str | None,
    Query(
        max_length=4000,
        description="An IfcOpenShell selector, e.g. `IfcWall, Pset_WallCommon.FireRating=REI90` "
        "(see docs/query.md). Omitted or blank: every element.",
    ),
]
SortParam = Annotated[
    str,
    Query(
        pattern=r"^-?(global_id|name|ifc_class)$",
        description="`global_id`, `name` or `ifc_class`; prefix `-` for descending.",
    ),
]
GlobalIdPath = Annotated[str, Path(pattern=GLOBAL_ID_PATTERN, description="IFC GlobalId")]


@elements_router.get(
    "/versions/{version_id}/elements",
    response_model=Page[ElementOut],
    responses={**problem_responses(400, 404), 304: {"description": "Not modified"}},
    tags=["elements"],
    summary="Elements of a version, optionally filtered by a selector, cursor-paginated",
)
async def list_elements(
    version_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    _: Read,
    q: SelectorParam = None,
    sort: SortParam = "global_id",
    cursor: CursorParam = None,
    limit: LimitParam = 100,
    fields: FieldsParam = None,
) -> Response:
    chosen = service.parse_fields(fields)
    version = await versions.get_version(session, version_id)
    key = key_of("elements", version.id, q, sort, cursor, limit, chosen)
    headers, unchanged = validators(request, key)
    if unchanged:
        return unchanged
    page = await lookup(
        request, key, lambda: service.query_page(session, version, q, sort, cursor, limit, chosen)
    )
    return json_response(page, headers)


@elements_router.get(
    "/versions/{version_id}/elements/{global_id}",
    response_model=ElementOut,
    responses={**problem_responses(404), 304: {"description": "Not modified"}},
    tags=["elements"],
    summary="One element of a version",
)
async def get_element(
    version_id: uuid.UUID,
    global_id: GlobalIdPath,
    request: Request,
    session: SessionDep,
    _: Read,
    fields: FieldsParam = None,
) -> Response:
    chosen = service.parse_fields(fields)
    version = await versions.get_version(session, version_id)
    payload_hash, doc = await versions.get_element(session, version, global_id)
    headers, unchanged = validators(request, key_of("element", payload_hash, global_id, chosen))
    if unchanged:
        return unchanged
    return json_response(service.shape_element(global_id, doc, chosen), headers)


def json_response(data: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), media_type="application/json", headers=headers)


def validated(request: Request, response: Response, key: str, variant: str = "") -> Response | None:
    """Put the answer's validators on ``response``; a 304 when the client holds it."""
    headers, unchanged = validators(request, key, variant)
    response.headers.update(headers)
    return unchanged


@router.post(
    "/versions/{version_id}/query",
    response_model=Page[ElementOut],
    responses=problem_responses(400, 404),
    summary="Elements matching a selector (the body form of GET .../elements?q=)",
)
async def query_elements(
    version_id: uuid.UUID, body: QueryIn, request: Request, session: SessionDep, _: Read
) -> Any:
    chosen = service.parse_fields(body.fields)
    version = await versions.get_version(session, version_id)
    key = key_of("elements", version.id, body.q, body.sort, body.cursor, body.limit, chosen)
    return await lookup(
        request,
        key,
        lambda: service.query_page(
            session, version, body.q, body.sort, body.cursor, body.limit, chosen
        ),
    )


EXPORT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


@router.get(
    "/versions/{version_id}/takeoff",
    dependencies=[rate_limit("export", by=user_key)],
    responses={
        **problem_responses(400, 404, 429),
        **NOT_MODIFIED,
        200: {"content": {t: {} for t in EXPORT_TYPES.values()}},
    },
    summary="Quantity takeoff: counts and quantity aggregates grouped by class, type, storey, "
    "material or a property; as JSON, CSV or XLSX",
)
async def takeoff(
    version_id: uuid.UUID,
    request: Request,
    response: Response,
    session: SessionDep,
    access: Read,
    q: Annotated[str | None, Query(max_length=4000, description="A selector")] = None,
    group_by: Annotated[
        str | None,
        Query(
            max_length=600,
            description="Up to 3 of `class`, `type`, `storey`, `material`, `Pset.Prop`; "
            "default `class`.",
        ),
    ] = None,
    measures: Annotated[
        str | None,
        Query(
            max_length=3000,
            description="`Qto_Set.Quantity[:sum|avg|min|max]`, comma-separated; "
            "e.g. `Qto_WallBaseQuantities.NetVolume`.",
        ),
    ] = None,
    format: Literal["json", "csv", "xlsx"] = "json",
) -> Any:
    version = await versions.get_version(session, version_id)
    key = key_of("takeoff", version.id, q, group_by, measures)
    if unchanged := validated(request, response, key, format):
        return unchanged

    async def compute() -> Any:
        return await service.takeoff(session, version, q, group_by, measures)

    if format == "json":
        return await lookup(request, key, compute)
    assert access.principal is not None
    settings = request.app.state.settings
    concurrency: Concurrency | None = request.app.state.concurrency
    slot = (
        concurrency.slot(f"export:{access.principal.user.id}", settings.max_concurrent_exports)
        if concurrency is not None
        else nullcontext()
    )
    async with slot:
        result = await lookup(request, key, compute)
        body = takeoffs.to_csv(result) if format == "csv" else takeoffs.to_xlsx(result)
    filename = f"takeoff-{version.id}.{format}"
    return Response(
        body,
        media_type=EXPORT_TYPES[format],
        headers={
            "ETag": response.headers["ETag"],
            "Cache-Control": CACHE_CONTROL,
            "Content-Disposition": f'attachment; filename="{filename}"',
        },
    )


@router.get(
    "/versions/{version_id}/diff/{other_version_id}",
    responses={**problem_responses(400, 404), **NOT_MODIFIED},
    summary="What changed from this version to another version of the same model",
)
async def diff_versions(
    version_id: uuid.UUID,
    other_version_id: uuid.UUID,
    request: Request,
    response: Response,
    session: SessionDep,
    _: Read,
    kind: Literal["added", "removed", "changed", "re_identified"] | None = None,
    cursor: CursorParam = None,
    limit: LimitParam = 100,
) -> Any:
    old = await versions.get_version(session, version_id)
    new = await versions.get_sibling(session, old, other_version_id)
    service.diff_position(cursor)  # a bad cursor is a 400 even for a client holding an ETag
    key = key_of("diff", old.id, new.id, kind, cursor, limit)
    if unchanged := validated(request, response, key):
        return unchanged
    return await lookup(
        request, key, lambda: service.diff_versions(session, old, new, kind, cursor, limit)
    )


@router.get(
    "/versions/{version_id}/tree",
    responses={**problem_responses(404), **NOT_MODIFIED},
    summary="The spatial structure with element counts per node",
)
async def spatial_tree(
    version_id: uuid.UUID, request: Request, response: Response, session: SessionDep, _: Read
) -> Any:
    version = await versions.get_version(session, version_id)
    key = key_of("tree", version.id)
    if unchanged := validated(request, response, key):
        return unchanged
    return await lookup(request, key, lambda: traversal.tree(session, version))


@router.get(
    "/versions/{version_id}/elements/{global_id}/relations",
    responses={**problem_responses(400, 404), **NOT_MODIFIED},
    summary="An element's neighbours in the relation graph, as nodes and edges",
)
async def element_relations(
    version_id: uuid.UUID,
    global_id: GlobalIdPath,
    request: Request,
    response: Response,
    session: SessionDep,
    _: Read,
    kind: Annotated[list[RelationKind] | None, Query(max_length=10)] = None,
    direction: Literal["out", "in", "both"] = "both",
    depth: Annotated[int, Query(ge=1, le=traversal.MAX_DEPTH)] = 1,
) -> Any:
    version = await versions.get_version(session, version_id)
    kinds = tuple(kind) if kind else None
    key = key_of("relations", version.id, global_id, kinds, direction, depth)
    if unchanged := validated(request, response, key):
        return unchanged
    return await lookup(
        request,
        key,
        lambda: traversal.neighbours(session, version, global_id, kinds, direction, depth),
    )
