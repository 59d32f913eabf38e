"""Selector queries through the API: errors, injection, sorting, paging and the POST form."""

from __future__ import annotations

from typing import Any

import ifcopenshell
import pytest

from bem.ingest.ifc import element_documents
from bem.testing import ifcgen
from tests.conftest import Api

pytestmark = pytest.mark.hot_path

TABLES = ("versions", "version_elements", "element_payloads", "relations", "users", "projects")


async def loaded(api: Api, n: int = 60) -> tuple[dict[str, str], str]:
    """Alice's headers and the id of a version holding ``ifcgen.generate(n)``."""
    return await upload_model(api, ifcgen.generate(n))


async def upload_model(api: Api, model: ifcopenshell.file) -> tuple[dict[str, str], str]:
    headers = await api.user("alice")
    _, model_id = await api.model(headers)
    return headers, await api.upload(headers, model_id, list(element_documents(model)))


async def select(api: Api, headers: dict[str, str], vid: str, **params: Any) -> Any:
    return await api.client.get(f"/v1/versions/{vid}/elements", params=params, headers=headers)


@pytest.mark.parametrize(
    ("q", "position", "phrase"),
    [
        ("IfcWall,", 8, "ends too early"),
        ("IfcWall, Name=", 14, "ends too early"),
        ("IfcWall ; Name=x", 8, "unexpected ';"),
        ("Name=/[unclosed/", 6, "invalid regular expression"),
    ],
)
async def test_syntax_errors_point_at_the_position(
    sqlite_api: Api, q: str, position: int, phrase: str
) -> None:
    headers, vid = await loaded(sqlite_api, 12)
    r = await select(sqlite_api, headers, vid, q=q)
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["type"].endswith("/invalid-selector")
    assert body["position"] == position
    assert phrase in body["detail"]


@pytest.mark.parametrize(
    ("q", "phrase"),
    [("Längd=x", "is not an IFC attribute name"), ("query:class=IfcWall", "query: facets")],
)
async def test_unsupported_facets_are_400(sqlite_api: Api, q: str, phrase: str) -> None:
    headers, vid = await loaded(sqlite_api, 12)
    r = await select(sqlite_api, headers, vid, q=q)
    assert r.status_code == 400
    assert phrase in r.json()["detail"]


PAYLOADS = [
    "'; DROP TABLE relations; --",
    "x' OR '1'='1",
    '\\" OR 1=1 --',
    ":bem_version",
    "%' OR p.name LIKE '%",
    "$.name') OR 1=1 --",
    "\u0000",
    "ä'ö\u202e",
    "a" * 3000,
]
POSITIONS = [
    'Name="{}"',
    'Name*="{}"',
    'Description!="{}"',
    'type="{}"',
    'material="{}"',
    'classification!="{}"',
    'location="{}"',
    'parent="{}"',
    'group="{}"',
    '"{}".FireRating=REI90',
    'Pset_WallCommon."{}"=x',
    '"{}"."{}">1',
    'Pset_WallCommon.FireRating="{}"',
    '/Pset_.*/."{}"=x',
]


async def test_injection_in_every_facet_position_changes_nothing(api: Api) -> None:
    headers, vid = await loaded(api, 24)
    before = {t: await api.scalar(f"SELECT count(*) FROM {t}") for t in TABLES}  # noqa: S608
    everything = len((await select(api, headers, vid, limit=1000)).json()["items"])
    for template in POSITIONS:
        for payload in PAYLOADS:
            q = template.replace("{}", payload.replace('"', '\\"'))
            r = await select(api, headers, vid, q=q, limit=1000)
            assert r.status_code in (200, 400, 422), (q, r.text)
            if r.status_code == 200:
                # Negated facets may match everything; nothing else can match these strings.
                assert len(r.json()["items"]) in (0, everything) or "!" in template, q
    after = {t: await api.scalar(f"SELECT count(*) FROM {t}") for t in TABLES}  # noqa: S608
    assert after == before


async def test_sorting_and_paging_cover_every_match_once(api: Api) -> None:
    headers, vid = await loaded(api, 60)
    for sort in ("global_id", "-global_id", "name", "-name", "ifc_class", "-ifc_class"):
        seen: list[dict[str, Any]] = []
        params: dict[str, Any] = {"q": "IfcElement", "sort": sort, "limit": 7}
        while True:
            body = (await select(api, headers, vid, **params)).json()
            seen.extend(body["items"])
            if not body["next_cursor"]:
                break
            params["cursor"] = body["next_cursor"]
        key = sort.lstrip("-")
        values = [(item.get(key) or "", item["global_id"]) for item in seen]
        if key == "global_id":
            values = [(item["global_id"],) for item in seen]  # type: ignore[misc]
        assert values == sorted(values, reverse=sort.startswith("-")), sort
        assert len({i["global_id"] for i in seen}) == len(seen)
        everything = await select(api, headers, vid, q="IfcElement", limit=1000)
        assert len(seen) == len(everything.json()["items"])


async def test_post_query_matches_get(api: Api) -> None:
    headers, vid = await loaded(api, 36)
    q = "IfcWall, Pset_WallCommon.FireRating=/REI[69]0/ + IfcDoor"
    got = await select(api, headers, vid, q=q, fields="global_id,name", limit=1000)
    posted = await api.client.post(
        f"/v1/versions/{vid}/query",
        json={"q": q, "fields": "global_id,name", "limit": 1000},
        headers=headers,
    )
    assert posted.status_code == 200
    assert posted.json() == got.json()
    assert set(posted.json()["items"][0]) == {"global_id", "name"}
    bad = await api.client.post(
        f"/v1/versions/{vid}/query", json={"q": "IfcWall", "extra": 1}, headers=headers
    )
    assert bad.status_code == 422
