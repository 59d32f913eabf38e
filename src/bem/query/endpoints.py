from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter

from bem.auth.dependencies import Access, allow
from bem.auth.permissions import PROJECT_READ
from bem.kit.db import SessionDep
from bem.kit.errors import problem_responses
from bem.kit.pagination import Page
from bem.query import service
from bem.query.schemas import QueryIn
from bem.versions import service as versions
from bem.versions.schemas import ElementOut

router = APIRouter(prefix="/v1", tags=["query"], responses=problem_responses(401, 403, 422))
Read = Annotated[Access, allow(PROJECT_READ)]


@router.post(
    "/versions/{version_id}/query",
    response_model=Page[ElementOut],
    responses=problem_responses(400, 404),
    summary="Elements matching a selector (the body form of GET .../elements?q=)",
)
async def query_elements(
    version_id: uuid.UUID, body: QueryIn, session: SessionDep, _: Read
) -> dict[str, Any]:
    chosen = versions.parse_fields(body.fields)
    version = await versions.get_version(session, version_id)
    return await service.query_page(
        session, version, body.q, body.sort, body.cursor, body.limit, chosen
    )
