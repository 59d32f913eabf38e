from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Request, Response, status
from pydantic import TypeAdapter, ValidationError
from starlette.datastructures import UploadFile

from bem.auth.dependencies import user_key
from bem.auth.permissions import PROJECT_EDIT
from bem.ingest import service
from bem.jobs.schemas import JobOut
from bem.kit.db import SessionDep, commit_early
from bem.kit.errors import Unprocessable, problem_responses
from bem.kit.ratelimit import rate_limit
from bem.kit.state import StateDep
from bem.kit.text import NO_CONTROL, LongText, has_control_chars
from bem.projects.access import ModelAccess, access_model

router = APIRouter(prefix="/v1", tags=["imports"], responses=problem_responses(401, 403, 422))

# The form is read by the route itself, after authorization (as a File parameter it was read,
# and spooled to disk, before anything checked who sent it).
FORM_FIELDS = {"file", "message"}
IMPORT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "additionalProperties": False,
                    "properties": {
                        "file": {
                            "type": "string",
                            "contentMediaType": "application/octet-stream",
                            "description": "The model file; its extension names the format",
                        },
                        "message": {
                            "type": "string",
                            "maxLength": 4000,
                            "pattern": NO_CONTROL,
                            "description": "What changed",
                        },
                    },
                }
            }
        },
    }
}
_message = TypeAdapter(LongText)


def _invalid(field: str, detail: str) -> Unprocessable:
    return Unprocessable(detail, slug="validation-error", parameter=field)


async def _import_form(request: Request) -> tuple[UploadFile, str | None]:
    """The uploaded file and message, checked (names without control characters)."""
    form = await request.form(max_files=1, max_fields=len(FORM_FIELDS))
    if unknown := sorted(set(form) - FORM_FIELDS):
        raise _invalid(unknown[0], f"Unknown form field {unknown[0]!r}; send file and message.")
    file, message = form.get("file"), form.get("message")
    if not isinstance(file, UploadFile):
        raise _invalid("file", "Send the model as the form's `file` part.")
    if has_control_chars(file.filename or ""):
        raise _invalid("file", "The file name may not contain control characters.")
    if message is not None:
        try:
            message = _message.validate_python(message)
        except ValidationError as exc:
            raise _invalid("message", exc.errors()[0]["msg"]) from exc
    return file, message


@router.post(
    "/models/{model_id}/imports",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses=problem_responses(404, 413, 415, 429, 503),
    dependencies=[rate_limit("upload", by=user_key)],
    openapi_extra=IMPORT_BODY,
    summary="Import a file (IFC, IFCZIP, DXF, NDJSON, JSON) as a new version, in the background",
)
async def create_import(
    model_id: uuid.UUID,
    request: Request,
    response: Response,
    session: SessionDep,
    state: StateDep,
    access: Annotated[ModelAccess, access_model(PROJECT_EDIT)],
) -> JobOut:
    """Answers 202 with a job; follow it at `GET /v1/jobs/{id}` (the `Location` header). The
    format comes from the file name's extension and must agree with the content."""
    await commit_early(session)  # hold no database connection while the file arrives
    file, message = await _import_form(request)
    job = await service.accept_import(
        session, state, access.model, access.principal.user.id, file, message
    )
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.of(job)
