from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from bem.auth.dependencies import user_key
from bem.auth.permissions import PROJECT_READ
from bem.kit.cache import key_of, lookup, validators
from bem.kit.db import SessionDep
from bem.kit.errors import problem_responses
from bem.kit.pagination import CursorParam, LimitParam, Page
from bem.kit.ratelimit import spend
from bem.kit.state import StateDep
from bem.query import service, traversal
from bem.query.schemas import (
    MAX_FIELDS_CHARS,
    MAX_GROUP_BY_CHARS,
    MAX_MEASURES_CHARS,
    ElementQuery,
    QueryIn,
    TakeoffQuery,
)
from bem.versions import service as versions
from bem.versions.access import VersionAccess, access_version
from bem.versions.reading import VersionDataDep
from bem.versions.schemas import GLOBAL_ID_PATTERN, ElementOut, RelationKind

router = APIRouter(prefix="/v1", tags=["query"], responses=problem_responses(401, 403, 422))
# A version's elements, listed (with a selector) or one by one: included right after the
# versions router, whose sub-resources they are.
elements_router = APIRouter(
    prefix="/v1", tags=["versions"], responses=problem_responses(401, 403, 422)
)
Read = Annotated[VersionAccess, access_version(PROJECT_READ)]
NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {"description": "Not modified (`If-None-Match` holds the ETag)"}
}
FieldsParam = Annotated[
    str | None,
    Query(
        max_length=MAX_FIELDS_CHARS,
        description="Comma-separated parts of each element to return, e.g. "
        "`name,ifc_class,properties.Pset_WallCommon`; `global_id` is always included.",
    ),
]
GlobalIdPath = Annotated[str, Path(pattern=GLOBAL_ID_PATTERN, description="IFC GlobalId")]


async def element_query(
    q: Annotated[
        str | None,
        Query(
            max_length=4000,
            description="An IfcOpenShell selector, e.g. "
            "`IfcWall, Pset_WallCommon.FireRating=REI90` (see docs/query.md). Omitted or "
            "blank: every element.",
        ),
    ] = None,
    sort: Annotated[
        str,
        Query(
            pattern=r"^-?(global_id|name|ifc_class)$",
            description="`global_id`, `name` or `ifc_class`; prefix `-` for descending.",
        ),
    ] = "global_id",
    cursor: CursorParam = None,
    limit: LimitParam = 100,
    fields: FieldsParam = None,
) -> ElementQuery:
    return ElementQuery(q, sort, cursor, limit, service.parse_fields(fields))


async def takeoff_query(
    q: Annotated[str | None, Query(max_length=4000, description="A selector")] = None,
    group_by: Annotated[
        str | None,
        Query(
            max_length=MAX_GROUP_BY_CHARS,
            description="Up to 3 of `class`, `type`, `storey`, `material`, `Pset.Prop`; "
            "default `class`.",
        ),
    ] = None,
    measures: Annotated[
        str | None,
        Query(
            max_length=MAX_MEASURES_CHARS,
            description="`Qto_Set.Quantity[:sum|avg|min|max]`, comma-separated; "
            "e.g. `Qto_WallBaseQuantities.NetVolume`.",
        ),
    ] = None,
    format: Literal["json", "csv", "xlsx"] = "json",
) -> TakeoffQuery:
    return TakeoffQuery(q, group_by, measures, format)


async def takeoff_request(
    request: Request,
    query: Annotated[TakeoffQuery, Depends(takeoff_query)],
    user: Annotated[str, Depends(user_key)],
) -> TakeoffQuery:
    """A takeoff's parameters; a file (CSV, XLSX) spends the user's ``export`` budget. JSON is
    a read like a selector page: a script polling takeoffs got 429 after 120 an hour."""
    if query.format != "json":
        await spend(request, "export", user)
    return query


def json_response(body: bytes, headers: dict[str, str] | None = None) -> Response:
    """An answer's JSON as it was encoded once (the cache's bytes, served untouched: decoded
    and encoded again through FastAPI, a cached page cost as much CPU as computing it)."""
    return Response(body, media_type="application/json", headers=headers)


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
    data: VersionDataDep,
    state: StateDep,
    access: Read,
    query: Annotated[ElementQuery, Depends(element_query)],
) -> Response:
    key = key_of("elements", access.version.id, *query.key())
    headers, unchanged = validators(request, key)
    if unchanged:
        return unchanged

    async def compute() -> dict[str, Any]:
        return await service.query_page(await data.session(access.version), access.version, query)

    return json_response(await lookup(state.cache, key, compute), headers)


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
    data: VersionDataDep,
    access: Read,
    fields: FieldsParam = None,
) -> Response:
    chosen = service.parse_fields(fields)
    session = await data.session(access.version)
    payload_hash, doc = await versions.get_element(session, access.version, global_id)
    headers, unchanged = validators(request, key_of("element", payload_hash, global_id, chosen))
    if unchanged:
        return unchanged
    return json_response(orjson.dumps(service.shape_element(global_id, doc, chosen)), headers)


@router.post(
    "/versions/{version_id}/query",
    response_model=Page[ElementOut],
    responses=problem_responses(400, 404),
    summary="Elements matching a selector (the body form of GET .../elements?q=)",
)
async def query_elements(
    version_id: uuid.UUID, body: QueryIn, data: VersionDataDep, state: StateDep, access: Read
) -> Response:
    fields = service.parse_fields(body.fields)
    query = ElementQuery(body.q, body.sort, body.cursor, body.limit, fields)
    key = key_of("elements", access.version.id, *query.key())

    async def compute() -> dict[str, Any]:
        return await service.query_page(await data.session(access.version), access.version, query)

    return json_response(await lookup(state.cache, key, compute))


@router.get(
    "/versions/{version_id}/takeoff",
    responses={
        **problem_responses(400, 404, 429),
        **NOT_MODIFIED,
        200: {"content": {t: {} for t in service.EXPORT_TYPES.values()}},
    },
    summary="Quantity takeoff: counts and quantity aggregates grouped by class, type, storey, "
    "material or a property; as JSON, CSV or XLSX",
)
async def takeoff(
    version_id: uuid.UUID,
    request: Request,
    data: VersionDataDep,
    state: StateDep,
    access: Read,
    query: Annotated[TakeoffQuery, Depends(takeoff_request)],
) -> Any:
    key = key_of("takeoff", access.version.id, query.q, query.group_by, query.measures)
    headers, unchanged = validators(request, key, query.format)
    if unchanged:
        return unchanged

    async def compute() -> Any:
        async with state.bulkhead.slot():
            return await service.takeoff(await data.session(access.version), access.version, query)

    if query.format == "json":
        return json_response(await lookup(state.cache, key, compute), headers)
    body = await service.takeoff_file(state, access.principal.user, query.format, key, compute)
    filename = f"takeoff-{access.version.id}.{query.format}"
    headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return Response(body, media_type=service.EXPORT_TYPES[query.format], headers=headers)


@router.get(
    "/versions/{version_id}/diff/{other_version_id}",
    responses={**problem_responses(400, 404), **NOT_MODIFIED},
    summary="What changed from this version to another version of the same model",
)
async def diff_versions(
    version_id: uuid.UUID,
    other_version_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    data: VersionDataDep,
    state: StateDep,
    access: Read,
    kind: Literal["added", "removed", "changed", "re_identified"] | None = None,
    cursor: CursorParam = None,
    limit: LimitParam = 100,
) -> Any:
    new = await versions.get_sibling(session, access.version, other_version_id)
    service.diff_position(cursor)  # a bad cursor is a 400 even for a client holding an ETag
    key = key_of("diff", access.version.id, new.id, kind, cursor, limit)
    headers, unchanged = validators(request, key)
    if unchanged:
        return unchanged

    async def compute() -> Any:
        async with state.bulkhead.slot():
            both = await data.session(access.version, new)
            summary = await lookup(
                state.cache,
                key_of("diff-summary", access.version.id, new.id),
                lambda: service.diff_summary(both, access.version, new),
            )
            counts = orjson.loads(summary)
            return await service.diff_versions(
                both, access.version, new, counts, kind, cursor, limit
            )

    return json_response(await lookup(state.cache, key, compute), headers)


@router.get(
    "/versions/{version_id}/tree",
    responses={**problem_responses(404), **NOT_MODIFIED},
    summary="The spatial structure with element counts per node",
)
async def spatial_tree(
    version_id: uuid.UUID,
    request: Request,
    data: VersionDataDep,
    state: StateDep,
    access: Read,
) -> Any:
    key = key_of("tree", access.version.id)
    headers, unchanged = validators(request, key)
    if unchanged:
        return unchanged

    async def compute() -> dict[str, Any]:
        return await traversal.tree(await data.session(access.version), access.version)

    return json_response(await lookup(state.cache, key, compute), headers)


@router.get(
    "/versions/{version_id}/elements/{global_id}/relations",
    responses={**problem_responses(400, 404), **NOT_MODIFIED},
    summary="An element's neighbours in the relation graph, as nodes and edges",
)
async def element_relations(
    version_id: uuid.UUID,
    global_id: GlobalIdPath,
    request: Request,
    data: VersionDataDep,
    state: StateDep,
    access: Read,
    kind: Annotated[list[RelationKind] | None, Query(max_length=10)] = None,
    direction: Literal["out", "in", "both"] = "both",
    depth: Annotated[int, Query(ge=1, le=traversal.MAX_DEPTH)] = 1,
) -> Any:
    kinds = tuple(kind) if kind else None
    key = key_of("relations", access.version.id, global_id, kinds, direction, depth)
    headers, unchanged = validators(request, key)
    if unchanged:
        return unchanged

    async def compute() -> dict[str, Any]:
        session = await data.session(access.version)
        return await traversal.neighbours(
            session, access.version, global_id, kinds, direction, depth
        )

    return json_response(await lookup(state.cache, key, compute), headers)
