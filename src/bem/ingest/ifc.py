"""IFC -> element documents, agreeing with ``ifcopenshell.util.element`` by construction,
with lengths, areas, volumes and masses converted to SI (DOMAIN.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ifcopenshell
import ifcopenshell.util.classification
import ifcopenshell.util.element as util
import ifcopenshell.util.unit

from bem.ingest.formats import BadSource

Entity = Any
SUPPORTED_SCHEMAS = ("IFC2X3", "IFC4X3", "IFC4")
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
# ifcopenshell scales masses to grams; the SI unit is the kilogram.
SI_BASE = {"MASSUNIT": 1000.0}
TRAILER = b"END-ISO-10303-21;"


def open_model(path: Path) -> ifcopenshell.file:
    """Open a STEP file, refusing truncated, unreadable and unsupported-schema files."""
    with path.open("rb") as file:
        file.seek(max(path.stat().st_size - 4096, 0))
        if TRAILER not in file.read():
            raise BadSource(
                f"The file does not end with {TRAILER.decode()}: it is truncated.",
                slug="truncated-file",
            )
    try:
        model = ifcopenshell.open(str(path))
    except (ifcopenshell.Error, OSError, UnicodeDecodeError) as exc:
        raise BadSource(f"IfcOpenShell cannot read the file: {exc}", slug="malformed-file") from exc
    schema = str(model.schema_identifier or model.schema)
    if not schema.upper().startswith(SUPPORTED_SCHEMAS):
        raise BadSource(
            f"Schema {schema} is not supported; BEM reads {', '.join(SUPPORTED_SCHEMAS)}.",
            slug="unsupported-schema",
        )
    return model


@dataclass
class Units:
    """The factors that take the file's units to SI, per IfcUnitEnum, and what they were."""

    factors: dict[str, float] = field(default_factory=dict)
    declared: dict[str, Any] = field(default_factory=dict)
    _by_definition: dict[int, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, model: ifcopenshell.file) -> Units:
        units = cls()
        for unit_type, label in UNIT_TYPES.items():
            factor = ifcopenshell.util.unit.calculate_unit_scale(model, unit_type)
            factor /= SI_BASE.get(unit_type, 1.0)
            unit = ifcopenshell.util.unit.get_project_unit(model, unit_type)
            name = ifcopenshell.util.unit.get_full_unit_name(unit) if unit is not None else None
            units.declared[label] = {"unit": name, "to_si": factor}
            if factor != 1.0:
                units.factors[unit_type] = factor
        return units

    @property
    def is_si(self) -> bool:
        return not self.factors

    def _factors_of(self, definition: Entity) -> dict[str, float]:
        """``property name -> factor`` for one property or quantity set (cached: sets are
        often shared by many elements)."""
        found = self._by_definition.get(definition.id())
        if found is not None:
            return found
        found = {}
        if definition.is_a("IfcElementQuantity"):
            for q in definition.Quantities:
                factor = self.factors.get(QUANTITY_UNIT.get(q.is_a(), ""))
                if factor is not None and q.Unit is None:
                    found[q.Name] = factor
        elif definition.is_a("IfcPropertySet"):
            for p in definition.HasProperties:
                value = getattr(p, "NominalValue", None)
                if value is None or not value.is_a().endswith("Measure"):
                    continue
                unit_type = ifcopenshell.util.unit.get_measure_unit_type(value.is_a())
                factor = self.factors.get(unit_type)
                if factor is not None and p.Unit is None:
                    found[p.Name] = factor
        self._by_definition[definition.id()] = found
        return found

    def convert(self, element: Entity, sets: dict[str, dict[str, Any]]) -> None:
        """Scale measured values of ``get_psets`` output in place. Type sets first, then the
        occurrence's, which override them as in ``get_psets``."""
        definitions: list[Entity] = []
        element_type = util.get_type(element)
        if element_type is not None and element_type != element:
            definitions.extend(element_type.HasPropertySets or ())
        for rel in _inverse(element, "IsDefinedBy"):
            if rel.is_a("IfcRelDefinesByProperties"):
                definitions.append(rel.RelatingPropertyDefinition)
        plan: dict[tuple[str, str], float] = {}
        for definition in definitions:
            for prop, factor in self._factors_of(definition).items():
                plan[(definition.Name, prop)] = factor
        for (set_name, prop), factor in plan.items():
            values = sets.get(set_name)
            if values is not None and isinstance(values.get(prop), int | float):
                values[prop] = values[prop] * factor


def _ref(entity: Entity | None) -> dict[str, Any] | None:
    if entity is None:
        return None
    return {"global_id": entity.GlobalId, "name": entity.Name, "ifc_class": entity.is_a()}


def _plain(value: Any) -> Any:
    """get_psets values without the ``id`` keys, tuples as lists."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "id"}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value


def _materials(element: Entity, length: float = 1.0) -> list[dict[str, Any]]:
    material = util.get_material(element, should_skip_usage=True)
    if material is None:
        return []

    def one(m: Entity, layer_thickness: float | None = None, fraction: float | None = None) -> Any:
        category = getattr(m, "Category", None)
        return {
            "name": m.Name,
            "category": category,
            "layer_thickness": layer_thickness,
            "fraction": fraction,
        }

    if material.is_a("IfcMaterial"):
        return [one(material)]
    if material.is_a("IfcMaterialLayerSet"):
        return [
            one(layer.Material, layer_thickness=float(layer.LayerThickness) * length)
            for layer in material.MaterialLayers
            if layer.Material is not None
        ]
    if material.is_a("IfcMaterialProfileSet"):
        return [one(p.Material) for p in material.MaterialProfiles if p.Material is not None]
    if material.is_a("IfcMaterialConstituentSet"):
        return [
            one(c.Material, fraction=c.Fraction)
            for c in material.MaterialConstituents or ()
            if c.Material is not None
        ]
    if material.is_a("IfcMaterialList"):
        return [one(m) for m in material.Materials]
    return []


def _classification(element: Entity) -> list[dict[str, Any]]:
    out = []
    for ref in ifcopenshell.util.classification.get_references(element):
        system = ifcopenshell.util.classification.get_classification(ref)
        identification = getattr(ref, "Identification", None) or getattr(ref, "ItemReference", None)
        out.append(
            {
                "system": system.Name if system is not None else None,
                "identification": identification,
                "name": ref.Name,
            }
        )
    return sorted(out, key=lambda c: (c["system"] or "", c["identification"] or ""))


def _inverse(element: Entity, name: str) -> tuple[Entity, ...]:
    return tuple(getattr(element, name, None) or ())


def _relations(element: Entity) -> list[dict[str, str]]:
    edges = set()
    for rel in _inverse(element, "HasOpenings"):
        edges.add(("voided_by", rel.RelatedOpeningElement.GlobalId))
    for rel in _inverse(element, "VoidsElements"):
        edges.add(("voids", rel.RelatingBuildingElement.GlobalId))
    for rel in _inverse(element, "HasFillings"):
        edges.add(("filled_by", rel.RelatedBuildingElement.GlobalId))
    for rel in _inverse(element, "FillsVoids"):
        edges.add(("fills", rel.RelatingOpeningElement.GlobalId))
    for rel in _inverse(element, "ConnectedTo"):
        edges.add(("connected_to", rel.RelatedElement.GlobalId))
    for rel in _inverse(element, "ConnectedFrom"):
        edges.add(("connected_to", rel.RelatingElement.GlobalId))
    return [{"kind": kind, "target": target} for kind, target in sorted(edges)]


def element_document(element: Entity, units: Units | None = None) -> dict[str, Any]:
    groups = [
        _ref(rel.RelatingGroup)
        for rel in _inverse(element, "HasAssignments")
        if rel.is_a("IfcRelAssignsToGroup")
    ]
    properties = util.get_psets(element, psets_only=True)
    quantities = util.get_psets(element, qtos_only=True)
    if units is not None and not units.is_si:
        units.convert(element, properties)
        units.convert(element, quantities)
    return {
        "global_id": element.GlobalId,
        "ifc_class": element.is_a(),
        "predefined_type": util.get_predefined_type(element),
        "name": element.Name,
        "description": element.Description,
        "object_type": getattr(element, "ObjectType", None),
        "tag": getattr(element, "Tag", None),
        "type": _ref(util.get_type(element)),
        "container": _ref(util.get_container(element)),
        "parent": _ref(util.get_aggregate(element)),
        "materials": _materials(element, units.factors.get("LENGTHUNIT", 1.0) if units else 1.0),
        "classification": _classification(element),
        "groups": groups,
        "properties": _plain(properties),
        "quantities": _plain(quantities),
        "relations": _relations(element),
        "geometry": None,
    }


def element_documents(
    model: ifcopenshell.file, units: Units | None = None
) -> Iterator[dict[str, Any]]:
    """Every IfcProduct of the model (spatial structure included) as an element document."""
    units = units or Units.of(model)
    for element in model.by_type("IfcProduct"):
        yield element_document(element, units)
