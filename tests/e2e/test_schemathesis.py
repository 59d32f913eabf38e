"""Property-based conformance over the whole committed OpenAPI document against a real
``bem serve`` process: no 5xx, and every response matches the documented status codes,
content types and schemas. Fixed seed, bounded examples."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.helpers import bem, bem_server


@schemathesis.serializer("application/x-ndjson", "application/ndjson", "application/jsonl")
def ndjson(ctx: object, value: object) -> bytes:
    """Upload bodies as NDJSON: one generated element per line."""
    items = value if isinstance(value, list) else [value]
    return "".join(json.dumps(item) + "\n" for item in items).encode()  # big ints too


OPENAPI = Path(__file__).resolve().parents[2] / "openapi.json"
schema = schemathesis.openapi.from_path(str(OPENAPI))
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEM_")}
    env.update(
        BEM_DATABASE_URL=f"sqlite+aiosqlite:///{tmp / 'bem.db'}",
        BEM_RATE_LIMIT_ENABLED="false",
        BEM_MAIL_BACKEND="file",
        BEM_MAIL_FILE_DIR=str(tmp / "mail"),
        BEM_LOG_LEVEL="WARNING",
    )

    bem(["migrate"], env, tmp)
    bem(["demo", "--size", "20"], env, tmp)
    token = bem(["users", "create-admin", "--email", "fuzz@example.com"], env, tmp).stdout.strip()
    with bem_server(env, tmp) as (base, _):
        yield base, {"Authorization": f"Bearer {token}"}


@schema.parametrize()
@settings(
    max_examples=int(os.environ.get("BEM_FUZZ_EXAMPLES", "25")),
    derandomize=True,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi(
    case: schemathesis.Case, live: tuple[str, dict[str, str]]
) -> None:
    base, headers = live
    case.call_and_validate(base_url=base, headers=headers)
