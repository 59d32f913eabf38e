from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from bem.versions.schemas import ElementIn

GID = "2ha9axpnr09h4obm6I1c2S"


def element(**extra: Any) -> dict[str, Any]:
    return {"global_id": GID, "ifc_class": "IfcWall", **extra}


def test_class_names_follow_the_schema_spelling() -> None:
    assert ElementIn.model_validate(element(ifc_class="ifcwallstandardcase")).ifc_class == (
        "IfcWallStandardCase"
    )
    assert ElementIn.model_validate(element(ifc_class="IfcAlignment")).ifc_class == "IfcAlignment"


def test_typed_values_are_kept() -> None:
    props = {"P": {"b": True, "i": 3, "f": 2.5, "s": "REI90", "n": None, "l": [1, "a", False]}}
    el = ElementIn.model_validate(element(properties=props))
    assert el.properties == props
    assert type(el.properties["P"]["b"]) is bool and type(el.properties["P"]["i"]) is int


@pytest.mark.parametrize(
    "bad",
    [
        element(global_id="too-short"),
        element(ifc_class="IfcWallType"),  # a type object is not an element
        element(ifc_class="Wall"),
        element(name="a\x00b"),
        element(name="x" * 256),
        element(properties={"P": {"x": {"nested": 1}}}),
        element(properties={"P": {"x": float("nan")}}),
        element(properties={"P": {"x": "s" * 4001}}),
        element(quantities={"Q": {"Length": "5 m"}}),
        element(quantities={"Q": {"Length": True}}),
        element(relations=[{"kind": "likes", "target": GID}]),
        element(materials=[{"name": "Brick", "colour": "red"}]),
        element(extra_field=1),
        element(geometry={"bbox": [[0, 0], [1, 1]]}),
    ],
)
def test_invalid_elements_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ElementIn.model_validate(bad)


def test_references_accept_global_ids_or_objects() -> None:
    el = ElementIn.model_validate(
        element(
            type={"global_id": GID, "name": "WT", "ifc_class": "IfcWallType"},
            container=GID,
            groups=[GID, {"global_id": GID}],
        )
    )
    assert el.container == GID
