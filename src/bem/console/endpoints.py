from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import FileResponse, RedirectResponse

from bem.kit.errors import NotFound

STATIC = Path(__file__).parent / "static"
# The page itself is revalidated every time (a deploy shows at once); its assets are small.
NO_CACHE = {"Cache-Control": "no-cache"}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root(request: Request) -> Response:
    """Browsers go to the console; API clients get the usual problem+json 404."""
    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse("/console", status_code=307)
    raise NotFound("Nothing is served at /; the API is under /v1 (see /docs).")


@router.get("/console")
async def console() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=NO_CACHE)
