"""The committed openapi.json is the app's; every /v1 route documents auth and errors."""

from __future__ import annotations

import json
from pathlib import Path

from bem.app import create_app
from bem.config import Settings

PROBLEM = {"$ref": "#/components/schemas/ProblemDetail"}
COMMITTED = Path(__file__).resolve().parents[2] / "openapi.json"


def test_committed_openapi_matches_the_app() -> None:
    schema = create_app(Settings(profile="test")).openapi()
    committed = json.loads(COMMITTED.read_text())
    assert committed == json.loads(json.dumps(schema)), "run `make openapi` and commit"


def test_every_v1_operation_declares_auth_and_problem_responses() -> None:
    schema = create_app(Settings(profile="test")).openapi()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    for path, operations in schema["paths"].items():
        if not path.startswith("/v1"):
            continue
        for method, op in operations.items():
            assert op.get("x-permission"), f"{method} {path} declares no permission"
            if op["x-permission"] != "public":
                assert op.get("security"), f"{method} {path} declares no auth scheme"
                assert "401" in op["responses"], f"{method} {path} lacks 401"
            if op.get("parameters") or op.get("requestBody"):
                assert "422" in op["responses"], f"{method} {path} lacks 422"
            for status, response in op["responses"].items():
                if status.startswith(("4", "5")):
                    assert response["content"] == {"application/problem+json": {"schema": PROBLEM}}
            assert op.get("summary"), f"{method} {path} has no summary"


REQUEST_LINE_LIMIT = 65_536  # uvicorn with httptools: longer is a text/plain 400


def test_every_documented_request_line_fits_the_http_parser() -> None:
    """The longest URL each operation documents, every character a 4-byte UTF-8 one
    percent-encoded (12 bytes), fits the parser's limit: a request within the documented
    limits must reach the app (the takeoff's reached 91 KB; schemathesis found it)."""
    committed = json.loads(COMMITTED.read_text())
    for path, operations in committed["paths"].items():
        for method, op in operations.items():
            length = len(f"{method.upper()}  HTTP/1.1") + len(path) + 36 * path.count("{")
            for parameter in op.get("parameters", []):
                if parameter["in"] != "query":
                    continue
                schemas = [parameter["schema"], *parameter["schema"].get("anyOf", [])]
                longest = max((s.get("maxLength", 0) for s in schemas), default=0)
                patterned = any("pattern" in s or "format" in s for s in schemas)
                width = 3 if patterned else 12  # an ASCII pattern: percent-encoded at most
                length += len(parameter["name"]) + 2 + (longest * width or 32)
            assert length <= REQUEST_LINE_LIMIT, f"{method} {path}: {length} bytes"
