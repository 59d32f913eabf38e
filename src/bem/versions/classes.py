"""The IFC class tree, from IfcOpenShell's schema wrapper: the one place that walks it.

Schemas differ in their trees (``IfcBuildingElementPart`` is a building element in IFC2X3
and an element component in IFC4; IFC4X3 renames ``IfcBuildingElement``), so every answer
can be asked of one schema or of all that BEM reads (IFC2X3, IFC4, IFC4X3).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import ifcopenshell.ifcopenshell_wrapper as wrapper


@cache
def schemas() -> tuple[str, ...]:
    return tuple(name for name in wrapper.schema_names() if name.startswith("IFC"))


@cache
def descendants(ifc_class: str, schema: str | None = None) -> frozenset[str]:
    """``ifc_class`` (any case) and every subtype, as spelled by the schema: in ``schema``,
    or in any schema BEM reads. Empty when no such class exists."""
    found: set[str] = set()
    for name in (schema,) if schema is not None else schemas():
        try:
            declaration = wrapper.schema_by_name(name).declaration_by_name(ifc_class)
        except RuntimeError:
            continue  # not a class of this schema
        root = declaration.as_entity()
        stack: list[Any] = [root] if root is not None else []
        while stack:
            entity = stack.pop()
            found.add(entity.name())
            stack.extend(entity.subtypes())
    return frozenset(found)


def schema_of(source_schema: str | None) -> str | None:
    """The schema whose class tree a version's selectors use: the one its IFC file declared
    (an IFC4 ``IfcBuildingElement`` has no parts, an IFC4X3 file has no such class), or None
    (every schema pooled) for JSON and DXF uploads, which declare none."""
    name = (source_schema or "").upper()
    return name if name in schemas() else None


@cache
def canonical_names(root: str = "IfcProduct") -> dict[str, str]:
    """Lower-case name -> schema spelling of ``root`` and its subtypes, in any schema."""
    return {name.lower(): name for name in descendants(root)}


@cache
def spatial_classes() -> tuple[str, ...]:
    """Every class that can contain elements (spatial elements and structure), sorted."""
    return tuple(
        sorted(descendants("IfcSpatialElement") | descendants("IfcSpatialStructureElement"))
    )
