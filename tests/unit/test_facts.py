"""Takeoff facts read the same values the takeoff read from documents."""

from __future__ import annotations

from typing import Any

from bem.versions.facts import STOREY, facts_of, measures

LEVEL = {"global_id": "1kTvXnbbzCWw8lcMd1dR4o", "name": "Level 01", "ifc_class": STOREY}
SPACE = {"global_id": "0p1Bv3Xbz9Ww8lcMd1dR4o", "name": "Room", "ifc_class": "IfcSpace"}


def doc(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"ifc_class": "IfcWall", "container": None, "parent": None}
    return {**base, **fields}


def test_storey_is_the_container_else_the_aggregate() -> None:
    assert facts_of("h", doc(container=LEVEL))["storey"] == "Level 01"
    in_space = facts_of("h", doc(container=SPACE, parent=LEVEL))
    assert (in_space["storey"], in_space["parent_storey"]) == ("Level 01", "Level 01")
    assert facts_of("h", doc(container=SPACE))["storey"] is None
    assert facts_of("h", doc(container=SPACE))["container_gid"] == SPACE["global_id"]
    # A space aggregated into a storey is what elements contained in it are on.
    assert facts_of("h", doc(ifc_class="IfcSpace", parent=LEVEL))["parent_storey"] == "Level 01"


def test_measures_keep_numbers_and_quantities_come_first() -> None:
    found = measures(
        doc(
            properties={
                "Pset_WallCommon": {"FireRating": "REI60", "U": 0.3, "IsExternal": True},
                "Shared": {"A": 1, "B": 2},
                "Texts": {"Note": "x"},
            },
            quantities={"Shared": {"A": 5.5, "B": None}, "Qto_WallBaseQuantities": {"L": 4}},
        )
    )
    assert found == {
        "Pset_WallCommon": {"U": 0.3},
        "Shared": {"A": 5.5},  # the quantity wins; a quantity without a number hides B
        "Qto_WallBaseQuantities": {"L": 4},
    }


def test_materials_are_distinct_names_type_is_its_name() -> None:
    facts = facts_of(
        "h",
        doc(
            materials=[{"name": "Brick"}, {"name": None}, {"name": "Air"}, {"name": "Brick"}],
            type={"global_id": "2O2Fr$t4X7Zf8NOew3FLOH", "name": "WT-1", "ifc_class": "T"},
        ),
    )
    assert facts["materials"] == ["Air", "Brick", None]
    assert facts["type_name"] == "WT-1"
    assert facts_of("h", doc())["materials"] == [] and facts_of("h", doc())["type_name"] is None
