"""Units of an IFC file and their factors to SI (metres, m², m³, kg), per IfcUnitEnum, and
the measure types of direct attributes, read from IfcOpenShell's schema; ``attribute()``
reads an optional attribute cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

import ifcopenshell
import ifcopenshell.util.unit
from ifcopenshell import ifcopenshell_wrapper as wrapper

Entity = Any
UNIT_TYPES = {
    "LENGTHUNIT": "length",
    "AREAUNIT": "area",
    "VOLUMEUNIT": "volume",
    "MASSUNIT": "mass",
}
QUANTITY_UNIT = {
    "IfcQuantityLength": "LENGTHUNIT",
    "IfcQuantityArea": "AREAUNIT",
    "IfcQuantityVolume": "VOLUMEUNIT",
    "IfcQuantityWeight": "MASSUNIT",
}
# An undeclared area or volume unit is taken from the declared length unit (IfcOpenShell
# takes it as SI): a model in millimetres without an area unit states its areas in mm2.
DERIVED_POWER = {"AREAUNIT": 2, "VOLUMEUNIT": 3}
# ifcopenshell scales masses to grams; the SI unit is the kilogram.
SI_BASE = {"MASSUNIT": 1000.0}


def attribute(entity: Entity, name: str) -> Any:
    """``getattr(entity, name, None)`` for explicit and inverse attributes. For a name its
    class does not have, IfcOpenShell first searches its EXPRESS rules for a derived
    attribute (27 µs against 3 µs a read; the first time per schema it imports the rules
    module, 20-30 ms)."""
    return getattr(entity, name) if entity.get_attribute_category(name) else None


def _is_scalar(kind: Any) -> bool:
    """Whether an attribute type holds one string, number, boolean or enumeration value (not
    an entity, a select or a list): defined types are followed to what they wrap."""
    while isinstance(kind, wrapper.named_type | wrapper.type_declaration):
        kind = kind.declared_type()
    return isinstance(kind, wrapper.simple_type | wrapper.enumeration_type)


@cache
def scalar_attributes(schema: str, ifc_class: str) -> tuple[tuple[int, str, str], ...]:
    """``(index, name, IfcUnitEnum or '')`` of a class's scalar direct attributes, in the
    schema's order (``IfcDoorLiningProperties.LiningDepth`` is an ``IfcPositiveLengthMeasure``:
    ``LENGTHUNIT``)."""
    entity = wrapper.schema_by_name(schema).declaration_by_name(ifc_class).as_entity()
    assert entity is not None, ifc_class  # instances are of entity classes
    found = []
    for index, attribute in enumerate(entity.all_attributes()):
        kind = attribute.type_of_attribute()
        if _is_scalar(kind):
            named = kind.declared_type().name() if isinstance(kind, wrapper.named_type) else ""
            found.append((index, attribute.name(), measure_unit(named)))
    return tuple(found)


@cache
def measure_unit(value_class: str) -> str:
    """``IfcPositiveLengthMeasure`` -> ``LENGTHUNIT`` (empty for values that are no measure)."""
    if not value_class.endswith("Measure"):
        return ""
    return str(ifcopenshell.util.unit.get_measure_unit_type(value_class) or "")


@dataclass
class Units:
    """The factors that take the file's units to SI, per IfcUnitEnum, and what they were."""

    factors: dict[str, float] = field(default_factory=dict)
    declared: dict[str, Any] = field(default_factory=dict)
    schema: str = "IFC4"

    @classmethod
    def of(cls, model: ifcopenshell.file) -> Units:
        units = cls(schema=str(model.schema_identifier))
        declares = bool(model.by_type("IfcProject"))  # a file without a project: SI assumed
        for unit_type, label in UNIT_TYPES.items():
            unit = ifcopenshell.util.unit.get_project_unit(model, unit_type) if declares else None
            length = units.factors.get("LENGTHUNIT")
            if unit is None and length is not None and unit_type in DERIVED_POWER:
                # Renga declares millimetres and no area or volume unit, and writes mm2, mm3.
                factor = length ** DERIVED_POWER[unit_type]
                units.declared[label] = {"unit": None, "to_si": factor, "derived_from": "length"}
                units.factors[unit_type] = factor
                continue
            if unit is None:  # undeclared: SI
                units.declared[label] = {"unit": None, "to_si": 1.0}
                continue
            factor = ifcopenshell.util.unit.calculate_unit_scale(model, unit_type)
            factor /= SI_BASE.get(unit_type, 1.0)
            # get_full_unit_name, without asking a unit that is not an IfcSIUnit for a Prefix
            # (see attribute()).
            prefix = unit.Prefix if unit.is_a("IfcSIUnit") else None
            name = (prefix or "") + unit.Name.upper()
            units.declared[label] = {"unit": name, "to_si": factor}
            if factor != 1.0:
                units.factors[unit_type] = factor
        return units

    @property
    def is_si(self) -> bool:
        return not self.factors

    def of_value(self, value: Entity | None, unit: Entity | None) -> float | None:
        """The factor for a typed value (``IfcLengthMeasure(115.)``) in the project's unit;
        a property with its own ``Unit`` is left as written."""
        if value is None or unit is not None or not self.factors:
            return None
        return self.factors.get(measure_unit(value.is_a()))

    def of_property(self, prop: Entity, prefix: str, found: dict[str, float]) -> None:
        name = f"{prefix}{prop.Name}"
        unit = attribute(prop, "Unit")
        if prop.is_a("IfcPropertySingleValue"):
            factor = self.of_value(prop.NominalValue, unit)
            if factor is not None:
                found[name] = factor
        elif prop.is_a("IfcPropertyBoundedValue"):
            for bound in ("UpperBoundValue", "LowerBoundValue", "SetPointValue"):
                factor = self.of_value(attribute(prop, bound), unit)
                if factor is not None:
                    found[f"{name}.{bound}"] = factor
        elif prop.is_a("IfcPropertyListValue"):
            values = prop.ListValues or ()
            factor = self.of_value(values[0], unit) if values else None
            if factor is not None:
                found[name] = factor
        elif prop.is_a("IfcComplexProperty"):
            for member in prop.HasProperties or ():
                self.of_property(member, f"{name}.", found)


def scaled(value: Any, factor: float | None) -> Any:
    """A number (or each number of a list) times ``factor``; with none, unchanged."""
    if factor is None or isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return value * factor
    if isinstance(value, list):
        return [scaled(v, factor) for v in value]
    return value
