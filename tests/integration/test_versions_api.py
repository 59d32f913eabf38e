"""Uploading versions and reading elements, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from bem.ingest.ifc import element_documents
from bem.testing import ifcgen
from tests.conftest import Api

pytestmark = pytest.mark.hot_path

STOREY = "0000000000000000000S01"


def wall(gid: str, **extra: Any) -> dict[str, Any]:
    return {
        "global_id": gid,
        "ifc_class": "IfcWall",
        "name": f"Wall {gid[-3:]}",
        "container": STOREY,
        "properties": {"Pset_WallCommon": {"FireRating": "REI90", "IsExternal": True}},
        "quantities": {"Qto_WallBaseQuantities": {"Length": 5.0, "NetVolume": 1.5}},
        **extra,
    }


def storey() -> dict[str, Any]:
    return {"global_id": STOREY, "ifc_class": "IfcBuildingStorey", "name": "Level 01"}


def ndjson(docs: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(d) for d in docs) + b"\n"


@pytest.fixture(scope="module")
def generated() -> list[dict[str, Any]]:
    return list(element_documents(ifcgen.generate(60)))


async def assert_nothing_stored(api: Api) -> None:
    for table in ("versions", "version_elements", "element_payloads", "element_facts", "relations"):
        assert await api.scalar(f"SELECT count(*) FROM {table}") == 0, table  # noqa: S608


async def upload(
    api: Api, model_id: str, headers: dict[str, str], body: bytes, kind: str = "x-ndjson"
) -> Any:
    return await api.client.post(
        f"/v1/models/{model_id}/versions",
        content=body,
        headers={**headers, "content-type": f"application/{kind}"},
        params={"message": "first"},
    )


async def test_upload_ndjson_then_read_elements(api: Api, generated: list[dict[str, Any]]) -> None:
    alice = await api.user("alice")
    model_id = (await api.model(alice))[1]
    r = await upload(api, model_id, alice, ndjson(generated))
    assert r.status_code == 201, r.text
    version = r.json()
    assert version["status"] == "ready" and version["seq"] == 1
    assert version["element_count"] == len(generated)
    assert version["source_format"] == "ndjson" and len(version["source_sha256"]) == 64

    by_gid = {d["global_id"]: d for d in generated}
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 25, **({"cursor": cursor} if cursor else {})}
        r = await api.client.get(
            f"/v1/versions/{version['id']}/elements", params=params, headers=alice
        )
        assert r.status_code == 200
        page = r.json()
        for item in page["items"]:
            assert item == by_gid[item["global_id"]]  # the document round-trips exactly
            seen.append(item["global_id"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(by_gid)

    door = next(d for d in generated if d["ifc_class"] == "IfcDoor")
    r = await api.client.get(
        f"/v1/versions/{version['id']}/elements/{door['global_id']}", headers=alice
    )
    assert r.status_code == 200 and r.json() == door

    r = await api.client.get(f"/v1/models/{model_id}/versions", headers=alice)
    assert [v["id"] for v in r.json()["items"]] == [version["id"]]


async def test_json_upload_resolves_references_and_selects_fields(api: Api) -> None:
    alice = await api.user("alice")
    model_id = (await api.model(alice))[1]
    docs = [wall("0000000000000000000W01"), storey()]
    r = await upload(api, model_id, alice, orjson.dumps({"elements": docs}), kind="json")
    assert r.status_code == 201, r.text
    vid = r.json()["id"]
    assert r.json()["stats"]["relations"] == 1  # the wall is contained in the storey

    r = await api.client.get(
        f"/v1/versions/{vid}/elements/0000000000000000000W01",
        params={"fields": "name,container,properties.Pset_WallCommon,quantities.Nope"},
        headers=alice,
    )
    assert r.json() == {
        "global_id": "0000000000000000000W01",
        "name": "Wall W01",
        "container": {"global_id": STOREY, "name": "Level 01", "ifc_class": "IfcBuildingStorey"},
        "properties": {"Pset_WallCommon": {"FireRating": "REI90", "IsExternal": True}},
        "quantities": {},
    }
    r = await api.client.get(
        f"/v1/versions/{vid}/elements", params={"fields": "secret"}, headers=alice
    )
    assert r.status_code == 400 and r.json()["type"].endswith("/invalid-fields")


async def test_same_model_twice_adds_no_payload_rows(
    api: Api, generated: list[dict[str, Any]]
) -> None:
    alice = await api.user("alice")
    model_id = (await api.model(alice))[1]
    first = (await upload(api, model_id, alice, ndjson(generated))).json()
    payloads = await api.scalar("SELECT count(*) FROM element_payloads")
    assert payloads == len(generated)
    second = (await upload(api, model_id, alice, ndjson(list(reversed(generated))))).json()
    assert second["seq"] == 2 and second["parent_id"] == first["id"]
    assert await api.scalar("SELECT count(*) FROM element_payloads") == payloads
    assert await api.scalar("SELECT count(*) FROM version_elements") == 2 * len(generated)


async def test_concurrent_uploads_to_one_model_get_consecutive_numbers(api: Api) -> None:
    """Each upload's version row holds a key-share lock on its model; numbering then locks
    the model row. A plain FOR UPDATE waited on the other uploads' key-share locks and two
    concurrent uploads deadlocked on PostgreSQL."""
    alice = await api.user("alice")
    model_id = (await api.model(alice))[1]
    bodies = [ndjson([{**storey(), "name": f"Level {i}"}]) for i in range(6)]
    answers = await asyncio.gather(*(upload(api, model_id, alice, body) for body in bodies))
    assert [r.status_code for r in answers] == [201] * 6, [r.text for r in answers]
    assert sorted(r.json()["seq"] for r in answers) == [1, 2, 3, 4, 5, 6]


@pytest.mark.postgres
async def test_overlapping_uploads_do_not_deadlock(
    postgres_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """Three uploads of the same 1,500 walls in different orders, at once, in batches of 250
    (the probe: 500 on 3 of 3). Payloads committed batch by batch, in hash order, never
    deadlock: inside the versions' transactions they did, across batches, and written again
    from the spool they sometimes deadlocked three times (503 in CI)."""
    from tests.conftest import make_api, settings_for

    async with make_api(settings_for(postgres_url, upload_batch_size=250)) as api:
        owner = await api.user("alice")
        docs = [storey()] + [wall(f"00000000000000000{i:05d}", tag=str(i)) for i in range(1500)]
        orders = [docs, docs[::-1], docs[::2] + docs[1::2]]
        models = [(await api.model(owner))[1] for _ in orders]
        answers = await asyncio.gather(
            *(upload(api, m, owner, ndjson(d)) for m, d in zip(models, orders, strict=True))
        )
        assert [r.status_code for r in answers] == [201, 201, 201], [r.text for r in answers]
        assert {r.json()["element_count"] for r in answers} == {1501}
        assert await api.scalar("SELECT count(*) FROM element_payloads") == 1501
    assert "upload.write_retried" not in capfd.readouterr().out  # no deadlock to retry


async def test_changed_elements_add_only_their_payloads(api: Api) -> None:
    alice = await api.user("alice")
    model_id = (await api.model(alice))[1]
    v1 = ifcgen.generate(40)
    docs1 = list(element_documents(v1))
    docs2 = list(element_documents(ifcgen.mutate(v1, fraction=0.1)))
    assert (await upload(api, model_id, alice, ndjson(docs1))).status_code == 201
    before = await api.scalar("SELECT count(*) FROM element_payloads")
    assert (await upload(api, model_id, alice, ndjson(docs2))).status_code == 201
    after = await api.scalar("SELECT count(*) FROM element_payloads")
    # Each payload has its takeoff facts, written once with the payload.
    assert await api.scalar("SELECT count(*) FROM element_facts") == after
    old = {orjson.dumps(d, option=orjson.OPT_SORT_KEYS) for d in docs1}
    changed = [d for d in docs2 if orjson.dumps(d, option=orjson.OPT_SORT_KEYS) not in old]
    assert 0 < after - before == len(changed) < len(docs2)


async def test_etag_and_if_none_match(api: Api) -> None:
    alice = await api.user("alice")
    model_id = (await api.model(alice))[1]
    vid = (await upload(api, model_id, alice, ndjson([storey()]))).json()["id"]
    for path in (f"/v1/versions/{vid}/elements", f"/v1/versions/{vid}/elements/{STOREY}"):
        r = await api.client.get(path, headers=alice)
        etag = r.headers["etag"]
        assert etag.startswith('"')
        r = await api.client.get(path, headers={**alice, "If-None-Match": etag})
        assert r.status_code == 304 and r.content == b""
        r = await api.client.get(path, headers={**alice, "If-None-Match": '"other"'})
        assert r.status_code == 200


BAD_UPLOADS = [
    ("x-ndjson", ndjson([storey(), storey()]), 422, "appears more than once"),
    ("x-ndjson", ndjson([wall("0000000000000000000W01")]), 422, "not an element of this upload"),
    ("x-ndjson", ndjson([storey()]) + b"{broken\n", 400, "line 2"),
    ("x-ndjson", b"[1,2]\n", 400, "expected a JSON object"),
    ("x-ndjson", b"\n\n", 422, "no elements"),
    ("json", b'{"elements": 5}', 400, "expected a JSON array"),
    ("json", orjson.dumps([{**storey(), "ifc_class": "IfcCat"}]), 422, "invalid"),
    ("json", orjson.dumps([{**storey(), "name": "a\x00b"}]), 422, "invalid"),
    ("json", orjson.dumps([{**storey(), "colour": "red"}]), 422, "invalid"),
    ("json", orjson.dumps([{**storey(), "properties": {"P": {"x": {"y": 1}}}}]), 422, "invalid"),
    ("json", orjson.dumps([{**storey(), "global_id": "short"}]), 422, "invalid"),
    ("xml", b"<elements/>", 415, "application/json"),
]


@pytest.mark.parametrize(("kind", "body", "status", "detail"), BAD_UPLOADS)
async def test_bad_uploads_fail_cleanly(
    api: Api, kind: str, body: bytes, status: int, detail: str
) -> None:
    alice = await api.user("alice")
    model_id = (await api.model(alice))[1]
    r = await upload(api, model_id, alice, body, kind=kind)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert detail in r.text
    await assert_nothing_stored(api)


async def test_failure_after_batches_were_written_leaves_nothing(api: Api) -> None:
    """A bad reference in the last batch is found before any batch is written (on
    PostgreSQL payloads commit batch by batch), and a forward reference is no error."""
    api.settings.upload_batch_size = 2
    alice = await api.user("alice")
    model_id = (await api.model(alice))[1]
    docs = [storey()] + [wall(f"0000000000000000000W{i:02d}") for i in range(9)]
    docs.append(wall("0000000000000000000WZZ", type="0000000000000000000T99"))
    r = await upload(api, model_id, alice, ndjson(docs))
    assert r.status_code == 422 and "type 0000000000000000000T99" in r.text
    await assert_nothing_stored(api)
    docs[-1] = wall("0000000000000000000WZZ", type=docs[1]["global_id"])
    docs[1] = wall("0000000000000000000W00", container="0000000000000000000WZZ")
    assert (await upload(api, model_id, alice, ndjson(docs))).status_code == 201


async def test_large_ndjson_is_written_in_batches(api: Api) -> None:
    api.settings.upload_batch_size = 50
    alice = await api.user("alice")
    model_id = (await api.model(alice))[1]
    docs = [storey()] + [wall(f"00000000000000000{i:05d}") for i in range(1200)]
    r = await upload(api, model_id, alice, ndjson(docs))
    assert r.status_code == 201, r.text
    assert r.json()["element_count"] == 1201
    # Counted over every batch (a mis-indented loop once counted the last batch only).
    assert r.json()["stats"] == {
        "by_class": {"IfcBuildingStorey": 1, "IfcWall": 1200},
        "relations": 1200,
    }
    # Wall names repeat every 1000 ("Wall 000".."Wall 999"): walls 1000..1199 have the same
    # content as walls 0..199, so they share payloads even inside one version.
    assert await api.scalar("SELECT count(*) FROM element_payloads") == 1 + 1000
    assert await api.scalar("SELECT count(*) FROM version_elements") == 1201


async def test_body_limits_are_enforced_while_streaming(api: Api) -> None:
    api.settings.max_ndjson_body_bytes = 4096
    api.settings.max_json_body_bytes = 2048
    api.settings.max_line_bytes = 1024
    alice = await api.user("alice")
    model_id = (await api.model(alice))[1]
    big = ndjson([wall(f"00000000000000000{i:05d}") for i in range(40)] + [storey()])
    r = await upload(api, model_id, alice, big)
    assert r.status_code == 413 and r.json()["limit"] == 4096
    r = await upload(api, model_id, alice, orjson.dumps([storey()] * 30), kind="json")
    assert r.status_code == 413
    long_line = orjson.dumps({**storey(), "description": "x" * 2000})
    r = await upload(api, model_id, alice, long_line)
    assert r.status_code == 413 and "exceeds 1024 bytes" in r.text
    assert await api.scalar("SELECT count(*) FROM versions") == 0


async def test_versions_of_other_projects_are_invisible(api: Api) -> None:
    alice, bob = await api.user("alice"), await api.user("bob")
    model_id = (await api.model(alice))[1]
    vid = (await upload(api, model_id, alice, ndjson([storey()]))).json()["id"]
    for path in (
        f"/v1/versions/{vid}",
        f"/v1/versions/{vid}/elements",
        f"/v1/versions/{vid}/elements/{STOREY}",
        f"/v1/models/{model_id}/versions",
    ):
        assert (await api.client.get(path, headers=bob)).status_code == 404, path
    r = await upload(api, model_id, bob, ndjson([storey()]))
    assert r.status_code == 404
    assert (
        await api.client.get(f"/v1/versions/{vid}/elements/bad", headers=alice)
    ).status_code == 422


@pytest.mark.postgres
async def test_large_uploads_refresh_planner_statistics(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bem.versions import service
    from tests.conftest import make_api, settings_for

    monkeypatch.setattr(service, "ANALYZE_AFTER_ELEMENTS", 10)
    async with make_api(settings_for(postgres_url)) as api:
        alice = await api.user("alice")
        model_id = (await api.model(alice))[1]
        before = await api.scalar(
            "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'version_elements'"
        )
        docs = list(element_documents(ifcgen.generate(12)))
        assert (await upload(api, model_id, alice, ndjson(docs))).status_code == 201
        after = await api.scalar(
            "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'version_elements'"
        )
        assert before is None and after is not None
