"""Version diff: counts and entries against an independent computation over the documents."""

from __future__ import annotations

from typing import Any

from bem.ingest.ifc import element_documents
from bem.kit.canonical import content_hash, normalize
from bem.testing import ifcgen
from tests.conftest import Api

NEW_IDS = ["3NewGlobalId0000000001", "3NewGlobalId0000000002", "3NewGlobalId0000000003"]


def models() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    v1 = ifcgen.generate(96)
    old = list(element_documents(v1))
    new = list(element_documents(ifcgen.mutate(v1, fraction=0.1)))
    spaces = [d for d in new if d["ifc_class"] == "IfcSpace"][:3]
    for doc, gid in zip(spaces, NEW_IDS, strict=True):
        doc["global_id"] = gid  # nothing references a space: the same element, a new GlobalId
    return old, new, [s["name"] for s in spaces]


def by_gid(docs: list[dict[str, Any]]) -> dict[str, str]:
    return {d["global_id"]: content_hash(normalize({**d, "global_id": None})) for d in docs}


async def test_diff_counts_entries_and_re_identified(api: Api) -> None:
    headers = await api.user("alice")
    _, mid = await api.model(headers)
    old, new, moved_names = models()
    v1, v2 = await api.upload(headers, mid, old), await api.upload(headers, mid, new)

    a, b = by_gid(old), by_gid(new)
    gone, came = set(a) - set(b), set(b) - set(a)
    re_identified = {g for g in gone if a[g] in {b[c] for c in came}}
    expected = {
        "added": len(came) - len(re_identified),
        "removed": len(gone) - len(re_identified),
        "changed": sum(1 for g in set(a) & set(b) if a[g] != b[g]),
        "re_identified": len(re_identified),
        "unchanged": sum(1 for g in set(a) & set(b) if a[g] == b[g]),
    }
    assert expected["re_identified"] == 3 and expected["changed"] > 0

    items: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 7}
    while True:
        r = await api.client.get(f"/v1/versions/{v1}/diff/{v2}", params=params, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        items += body["items"]
        if not body["next_cursor"]:
            break
        params["cursor"] = body["next_cursor"]
    assert body["summary"] == expected
    assert len(items) == sum(v for k, v in expected.items() if k != "unchanged")
    renamed = [i for i in items if i["kind"] == "re_identified"]
    assert sorted(i["new_global_id"] for i in renamed) == NEW_IDS
    assert sorted(i["name"] for i in renamed) == sorted(moved_names)

    changed = {i["global_id"]: i for i in items if i["kind"] == "changed"}
    fire = [
        i
        for i in changed.values()
        if {"path": "properties.Pset_WallCommon.AcousticRating", "old": None, "new": "Rw 52"}
        in i["changes"]
    ]
    assert fire and all("properties" in i["areas"] for i in fire)
    assert any("container" in i["areas"] for i in changed.values())

    only_added = await api.client.get(
        f"/v1/versions/{v1}/diff/{v2}", params={"kind": "added", "limit": 1000}, headers=headers
    )
    assert {i["kind"] for i in only_added.json()["items"]} == {"added"}
    assert len(only_added.json()["items"]) == expected["added"]


async def test_diff_needs_versions_of_one_model(api: Api) -> None:
    headers = await api.user("alice")
    pid, first = await api.model(headers, model="A")
    r = await api.client.post(f"/v1/projects/{pid}/models", json={"name": "B"}, headers=headers)
    versions = [
        await api.upload(headers, mid, list(element_documents(ifcgen.generate(5))))
        for mid in (first, r.json()["id"])
    ]
    r = await api.client.get(f"/v1/versions/{versions[0]}/diff/{versions[1]}", headers=headers)
    assert r.status_code == 404
    assert "not a version of this model" in r.json()["detail"]


async def test_identical_twins_pair_in_global_id_order(api: Api) -> None:
    """Two identical elements renamed into three: two re-identified pairs, one added."""
    headers = await api.user("alice")
    _, mid = await api.model(headers)
    twin = {"ifc_class": "IfcColumn", "name": "C"}
    old_ids = ["1Twin00000000000000002", "1Twin00000000000000001"]
    new_ids = ["2Twin00000000000000003", "2Twin00000000000000001", "2Twin00000000000000002"]
    v1 = await api.upload(headers, mid, [{**twin, "global_id": g} for g in old_ids])
    v2 = await api.upload(headers, mid, [{**twin, "global_id": g} for g in new_ids])
    body = (await api.client.get(f"/v1/versions/{v1}/diff/{v2}", headers=headers)).json()
    assert body["summary"] == {
        "added": 1,
        "removed": 0,
        "changed": 0,
        "re_identified": 2,
        "unchanged": 0,
    }
    pairs = {i["global_id"]: i.get("new_global_id") for i in body["items"]}
    assert pairs == {
        "1Twin00000000000000001": "2Twin00000000000000001",
        "1Twin00000000000000002": "2Twin00000000000000002",
        "2Twin00000000000000003": None,
    }


async def test_a_diff_confirms_nothing_about_other_projects(api: Api) -> None:
    """Another project's version read differently from one that does not exist, and
    ``If-None-Match: *`` answered 304 before the model check (and before the cursor was
    validated)."""
    alice, bob = await api.user("alice"), await api.user("bob")
    mine: list[str] = []
    for headers in (alice, alice, bob):
        _, mid = await api.model(headers)
        mine.append(await api.upload(headers, mid, list(element_documents(ifcgen.generate(3)))))
    own, bobs = mine[0], mine[2]
    answers = []
    for other in (bobs, "00000000-0000-0000-0000-000000000000"):
        for extra in ({}, {"If-None-Match": "*"}):
            r = await api.client.get(f"/v1/versions/{own}/diff/{other}", headers={**alice, **extra})
            assert r.status_code == 404, r.text
            answers.append(r.json()["detail"].replace(other, "<id>"))
    assert len(set(answers)) == 1, answers
    r = await api.client.get(
        f"/v1/versions/{own}/diff/{own}",
        params={"cursor": "not-a-cursor"},
        headers={**alice, "If-None-Match": "*"},
    )
    assert r.status_code == 400
