"""The spatial tree and relation neighbourhoods, checked against IfcOpenShell."""

from __future__ import annotations

from typing import Any

import ifcopenshell.util.element as util

from bem.testing import ifcgen
from tests.conftest import Api
from tests.integration.test_query_api import loaded


def walk(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for c in node["children"] for n in walk(c))]


async def test_tree_counts_match_ifcopenshell(api: Api) -> None:
    headers, vid = await loaded(api, 96)
    r = await api.client.get(f"/v1/versions/{vid}/tree", headers=headers)
    assert r.status_code == 200
    (root,) = r.json()["roots"]
    model = ifcgen.generate(96)
    assert root["ifc_class"] == "IfcProject" and root["name"] == "BEM test project"
    nodes = {n["global_id"]: n for n in walk(root)}
    for storey in model.by_type("IfcBuildingStorey"):
        contained = [e for e in model.by_type("IfcProduct") if util.get_container(e) == storey]
        below = util.get_decomposition(storey)
        node = nodes[storey.GlobalId]
        assert node["element_count"] == len(contained)
        assert {c["ifc_class"] for c in node["children"]} <= {"IfcSpace"}
        assert len(node["children"]) == len([e for e in below if e.is_a("IfcSpace")])
    site = next(n for n in nodes.values() if n["ifc_class"] == "IfcSite")
    assert (
        root["total_count"]
        == site["total_count"]
        == sum(n["element_count"] for n in nodes.values())
    )


async def test_relations_of_a_door(api: Api) -> None:
    headers, vid = await loaded(api, 24)
    model = ifcgen.generate(24)
    door = model.by_type("IfcDoor")[0]
    opening = door.FillsVoids[0].RelatingOpeningElement
    wall = opening.VoidsElements[0].RelatingBuildingElement
    url = f"/v1/versions/{vid}/elements/{door.GlobalId}/relations"

    one = (await api.client.get(url, params={"kind": "fills"}, headers=headers)).json()
    assert one["edges"] == [{"source": door.GlobalId, "kind": "fills", "target": opening.GlobalId}]

    two = await api.client.get(
        url, params={"kind": ["fills", "voids"], "depth": 2, "direction": "out"}, headers=headers
    )
    assert {n["global_id"] for n in two.json()["nodes"]} == {
        door.GlobalId,
        opening.GlobalId,
        wall.GlobalId,
    }
    assert {n["ifc_class"] for n in two.json()["nodes"]} == {
        "IfcDoor",
        "IfcOpeningElement",
        "IfcWall",
    }

    incoming = (await api.client.get(url, params={"direction": "in"}, headers=headers)).json()
    assert all(e["target"] == door.GlobalId for e in incoming["edges"])
    assert (await api.client.get(url, params={"depth": 9}, headers=headers)).status_code == 422
    missing = f"/v1/versions/{vid}/elements/0000000000000000000000/relations"
    assert (await api.client.get(missing, headers=headers)).status_code == 404
