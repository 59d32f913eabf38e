"""Takeoff facts read the same values the takeoff read from documents."""

from __future__ import annotations

from typing import Any

import pytest

from bem.versions.facts import STOREY, facts_of, material_shares, measures

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


def test_materials_are_shares_type_is_its_name() -> None:
    """Equal shares of a plain list (a material listed twice gets both), none for an
    element without materials."""
    facts = facts_of(
        "h",
        doc(
            materials=[{"name": "Brick"}, {"name": "Air"}, {"name": "Brick"}],
            type={"global_id": "2O2Fr$t4X7Zf8NOew3FLOH", "name": "WT-1", "ifc_class": "T"},
        ),
    )
    assert facts["materials"] == pytest.approx({"Air": 1 / 3, "Brick": 2 / 3})
    assert facts["type_name"] == "WT-1"
    assert facts_of("h", doc())["materials"] == {} and facts_of("h", doc())["type_name"] is None


@pytest.mark.parametrize(
    ("materials", "shares"),
    [
        (
            [{"name": "B", "layer_thickness": 0.3}, {"name": "P", "layer_thickness": 0.1}],
            {"B": 0.75, "P": 0.25},
        ),
        (
            [{"name": "A", "fraction": 0.3}, {"name": "B"}, {"name": "C"}],
            {"A": 0.3, "B": 0.35, "C": 0.35},
        ),
        ([{"name": "A", "fraction": 0.8}, {"name": "B", "fraction": 0.8}], {"A": 0.5, "B": 0.5}),
        ([{"name": "A", "layer_thickness": 0.2}, {"name": "B"}], {"A": 0.5, "B": 0.5}),
        ([{"name": "Steel"}], {"Steel": 1.0}),
    ],
)
def test_material_shares_follow_the_documented_rule(
    materials: list[dict[str, Any]], shares: dict[str, float]
) -> None:
    assert material_shares(materials) == pytest.approx(shares)
    assert sum(material_shares(materials).values()) == pytest.approx(1.0)
