"""The test-model generator and the element documents extracted from it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import ifcopenshell.util.element as util
import pytest

from bem.ingest.ifc import element_documents
from bem.testing import ifcgen
from bem.versions.schemas import ElementIn

SPATIAL = {"IfcSite", "IfcBuilding", "IfcBuildingStorey"}


@pytest.fixture(scope="module")
def model() -> Any:
    return ifcgen.generate(120, seed=7)


def docs_by_gid(model: Any) -> dict[str, dict[str, Any]]:
    return {d["global_id"]: d for d in element_documents(model)}


@pytest.mark.parametrize("n", [1, 10, 37, 250])
def test_exactly_n_elements(n: int) -> None:
    classes = Counter(d["ifc_class"] for d in element_documents(ifcgen.generate(n)))
    counted = sum(c for cls, c in classes.items() if cls not in SPATIAL | {"IfcOpeningElement"})
    assert counted == n


def test_same_seed_same_model_other_seed_other_ids(model: Any) -> None:
    assert docs_by_gid(ifcgen.generate(120, seed=7)) == docs_by_gid(model)
    assert set(docs_by_gid(ifcgen.generate(120, seed=8))).isdisjoint(docs_by_gid(model))


def test_model_has_the_semantics_the_tests_rely_on(model: Any) -> None:
    docs = list(element_documents(model))
    classes = Counter(d["ifc_class"] for d in docs)
    for cls in ("IfcWall", "IfcSlab", "IfcColumn", "IfcBeam", "IfcDoor", "IfcWindow", "IfcSpace"):
        assert classes[cls] > 0, cls
    walls = [d for d in docs if d["ifc_class"] == "IfcWall"]
    assert all(w["type"]["ifc_class"] == "IfcWallType" for w in walls)
    assert all(w["materials"] and w["materials"][0]["layer_thickness"] for w in walls)
    assert all(w["classification"][0]["system"] == "Uniclass 2015" for w in walls)
    doors = [d for d in docs if d["ifc_class"] == "IfcDoor"]
    assert all(any(r["kind"] == "fills" for r in d["relations"]) for d in doors)
    assert all(d["groups"][0]["name"] == "Fire compartment 1" for d in doors)
    spaces = [d for d in docs if d["ifc_class"] == "IfcSpace"]
    assert all(s["parent"]["ifc_class"] == "IfcBuildingStorey" for s in spaces)
    # The type says REI60; occurrences override FireRating and inherit IsExternal.
    assert {w["properties"]["Pset_WallCommon"]["FireRating"] for w in walls} - {"REI60"}
    assert all("IsExternal" in w["properties"]["Pset_WallCommon"] for w in walls)


def test_documents_agree_with_ifcopenshell_utilities(model: Any) -> None:
    docs = docs_by_gid(model)
    for element in model.by_type("IfcProduct"):
        doc = docs[element.GlobalId]
        ElementIn.model_validate(doc)
        psets = util.get_psets(element)
        for name, values in psets.items():
            values = {k: v for k, v in values.items() if k != "id"}
            assert (doc["properties"].get(name) or doc["quantities"].get(name)) == values
        assert len(psets) == len(doc["properties"]) + len(doc["quantities"])
        container = util.get_container(element)
        assert (doc["container"] or {}).get("global_id") == (container and container.GlobalId)
        element_type = util.get_type(element)
        assert (doc["type"] or {}).get("global_id") == (element_type and element_type.GlobalId)
        names = sorted(m.Name for m in util.get_materials(element))
        assert sorted({m["name"] for m in doc["materials"]}) == sorted(set(names))


def test_mutate_adds_removes_moves_and_changes(model: Any) -> None:
    v1 = docs_by_gid(model)
    v2 = docs_by_gid(ifcgen.mutate(model, seed=3, fraction=0.1))
    assert v1 == docs_by_gid(model)  # the input is untouched
    added, removed = set(v2) - set(v1), set(v1) - set(v2)
    common = set(v1) & set(v2)
    moved = {g for g in common if v1[g]["container"] != v2[g]["container"]}
    changed = {g for g in common if v1[g]["properties"] != v2[g]["properties"]}
    assert added and removed and moved and changed
    assert all(v2[g]["properties"]["Pset_WallCommon"]["FireRating"] == "REI240" for g in changed)
    assert docs_by_gid(ifcgen.mutate(model, seed=3, fraction=0.1)) == v2
