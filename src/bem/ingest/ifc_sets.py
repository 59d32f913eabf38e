"""Property and quantity set definitions of an IFC file as the element document's sets:
read as ``ifcopenshell.util.element`` reads them, flattened to scalar values, in SI.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ifcopenshell
import ifcopenshell.util.element as util

from bem.ingest.ifc_units import QUANTITY_UNIT, Units, attribute, scalar_attributes, scaled

Entity = Any

# Keys of get_psets' dicts for structured properties that describe rather than hold values.
_PROPERTY_META = frozenset({"id", "type", "Name", "Description"})


def json_value(value: Any) -> Any:
    """A JSON value: measures unwrapped, other entities by name, tuples as lists."""
    if isinstance(value, ifcopenshell.entity_instance):
        if value.id() == 0:  # a typed value such as IfcLengthMeasure(2.)
            return value.wrappedValue
        return attribute(value, "Name") or value.is_a()
    if isinstance(value, tuple | list):
        return [json_value(v) for v in value]
    return value


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """Complex, bounded, table and reference properties become dotted scalar properties:
    ``Cx.Sub`` for a complex property's members, ``B.UpperBoundValue`` for a bounded one."""
    if not isinstance(value, dict):
        out[prefix] = json_value(value)
        return
    if value.get("type") == "IfcComplexProperty":
        members = value.get("properties") or {}
    else:
        members = {k: v for k, v in value.items() if k not in _PROPERTY_META}
    for key, member in members.items():
        flatten(f"{prefix}.{key}", member, out)


def _flat(name: str, value: Any, factors: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    flatten(name, value, out)
    for key, factor in factors.items():
        if key in out:
            out[key] = scaled(out[key], factor)
    return out


def read_definition(definition: Entity, units: Units) -> dict[str, dict[str, Any]]:
    """One property set definition's values, flattened and in SI, grouped by top-level
    property, as ``get_property_definition`` reads them. Single values and simple quantities
    (nearly all of them) are read positionally in the same pass that finds their units, as
    ``get_properties`` / ``get_quantities`` read them; the rest through those functions."""
    groups: dict[str, dict[str, Any]] = {}
    if definition.is_a("IfcElementQuantity"):
        for quantity in definition[5] or ():  # Quantities
            name = quantity[0]
            if quantity.is_a("IfcPhysicalSimpleQuantity"):  # Name, Description, Unit, Value
                factor = (
                    None
                    if quantity[2] is not None
                    else units.factors.get(QUANTITY_UNIT.get(quantity.is_a(), ""))
                )
                groups[name] = {name: scaled(quantity[3], factor)}
            else:
                groups[name] = _flat(name, util.get_quantities([quantity])[name], {})
    elif definition.is_a("IfcPropertySet"):
        for prop in definition[4] or ():  # HasProperties
            name = prop[0]
            if prop.is_a("IfcPropertySingleValue"):  # Name, Description, NominalValue, Unit
                nominal = prop[2]
                factor = units.of_value(nominal, prop[3])
                value = json_value(nominal.wrappedValue) if nominal is not None else None
                groups[name] = {name: scaled(value, factor)}
            else:
                factors: dict[str, float] = {}
                units.of_property(prop, "", factors)
                groups[name] = _flat(name, util.get_properties([prop]).get(name), factors)
    else:  # predefined (door lining, window panel): measures are the entity's attributes
        measured = {i: unit for i, _, unit in scalar_attributes(units.schema, definition.is_a())}
        for index in range(4, len(definition)):
            value = definition[index]
            if value is None:
                continue
            name = definition.attribute_name(index)
            factor = units.factors.get(measured.get(index, ""))
            groups[name] = _flat(name, value, {name: factor} if factor is not None else {})
    return groups


def set_key(definition: Entity) -> str:
    """A set's key in the element document: its Name, or, for a set without one (BricsCAD
    writes ``$``, Renga ``''``), its class name (``IfcElementQuantity``)."""
    name = definition.Name
    return name if isinstance(name, str) and name.strip() else definition.is_a()


# A set read from one definition: its key, whether it holds quantities, and its values in SI
# grouped by top-level property (an occurrence's property replaces the type's whole).
SetValues = tuple[str, bool, dict[str, dict[str, Any]]]


def definitions_of(element: Entity, element_type: Entity | None) -> Iterator[tuple[Entity, bool]]:
    """The definitions ``get_psets`` reads, in its order (the type's, then the occurrence's,
    which override them), each with whether it may be shared by other elements."""
    if element_type is not None:
        for definition in element_type.HasPropertySets or ():
            yield definition, True
    for rel in attribute(element, "IsDefinedBy") or ():
        if not rel.is_a("IfcRelDefinesByProperties"):
            continue
        definition = rel.RelatingPropertyDefinition
        shared = len(rel.RelatedObjects or ()) > 1
        if definition.is_a("IfcPropertySetDefinitionSet"):
            for member in definition.wrappedValue:
                yield member, shared
        else:
            yield definition, shared
