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
        declares = bool(model.by_type("IfcProject"))  # a file without a project: SI assumed
        for unit_type, label in UNIT_TYPES.items():
            unit = ifcopenshell.util.unit.get_project_unit(model, unit_type) if declares else None
            if unit is None:  # undeclared: SI
                units.declared[label] = {"unit": None, "to_si": 1.0}
                continue
            factor = ifcopenshell.util.unit.calculate_unit_scale(model, unit_type)
            factor /= SI_BASE.get(unit_type, 1.0)
            name = ifcopenshell.util.unit.get_full_unit_name(unit)
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


# Keys of get_psets' dicts for structured properties that describe rather than hold values.
_PROPERTY_META = frozenset({"id", "type", "Name", "Description"})


def _value(value: Any) -> Any:
    """A JSON value: measures unwrapped, other entities by name, tuples as lists."""
    if isinstance(value, ifcopenshell.entity_instance):
        if value.id() == 0:  # a typed value such as IfcLengthMeasure(2.)
            return value.wrappedValue
        return getattr(value, "Name", None) or value.is_a()
    if isinstance(value, tuple | list):
        return [_value(v) for v in value]
    return value


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """Complex, bounded, table and reference properties become dotted scalar properties:
    ``Cx.Sub`` for a complex property's members, ``B.UpperBoundValue`` for a bounded one."""
    if not isinstance(value, dict):
        out[prefix] = _value(value)
        return
    if value.get("type") == "IfcComplexProperty":
        members = value.get("properties") or {}
    else:
        members = {k: v for k, v in value.items() if k not in _PROPERTY_META}
    for key, member in members.items():
        _flatten(f"{prefix}.{key}", member, out)


def _sets(sets: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """get_psets output as the element document's sets: no ``id`` keys, flat values."""
    out: dict[str, dict[str, Any]] = {}
    for name, values in sets.items():
        flat: dict[str, Any] = {}
        for key, value in values.items():
            if key != "id":
                _flatten(key, value, flat)
        out[name] = flat
    return out


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


# (relationship class, side A, side B, kind seen from A, kind seen from B)
EDGE_RELATIONSHIPS = (
    (
        "IfcRelVoidsElement",
        "RelatingBuildingElement",
        "RelatedOpeningElement",
        "voided_by",
        "voids",
    ),
    (
        "IfcRelFillsElement",
        "RelatingOpeningElement",
        "RelatedBuildingElement",
        "filled_by",
        "fills",
    ),
    ("IfcRelConnectsElements", "RelatingElement", "RelatedElement", "connected_to", "connected_to"),
)


@dataclass
class ModelContext:
    """What every element's extraction shares, computed once per model: its units, and
    openings, fillings, connections and group assignments indexed by entity id (one pass
    over the relationships instead of seven inverse lookups per element)."""

    model: ifcopenshell.file
    units: Units
    edges: dict[int, set[tuple[str, str]]] = field(default_factory=dict)
    groups: dict[int, list[Entity]] = field(default_factory=dict)
    shapes: Any = None  # ifcopenshell.geom settings when geometry summaries are on

    @classmethod
    def of(cls, model: ifcopenshell.file, *, geometry: bool = False) -> ModelContext:
        ctx = cls(model, Units.of(model))
        if geometry:
            import ifcopenshell.geom  # loads OpenCASCADE: only when asked

            ctx.shapes = ifcopenshell.geom.settings()
            ctx.shapes.set("use-world-coords", True)
        for ifc_class, side_a, side_b, kind_a, kind_b in EDGE_RELATIONSHIPS:
            for rel in model.by_type(ifc_class):
                a, b = getattr(rel, side_a), getattr(rel, side_b)
                if a is None or b is None:
                    continue
                ctx.edges.setdefault(a.id(), set()).add((kind_a, b.GlobalId))
                ctx.edges.setdefault(b.id(), set()).add((kind_b, a.GlobalId))
        for rel in model.by_type("IfcRelAssignsToGroup"):
            for member in rel.RelatedObjects or ():
                ctx.groups.setdefault(member.id(), []).append(rel.RelatingGroup)
        return ctx


def _property_and_quantity_sets(
    element: Entity, model: ifcopenshell.file
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``get_psets(psets_only=True)`` and ``get_psets(qtos_only=True)`` from one call (half
    the cost: ``bench/ingest.py``), split by the kind of each set's definition."""
    properties: dict[str, Any] = {}
    quantities: dict[str, Any] = {}
    for name, values in util.get_psets(element).items():
        definition = model.by_id(values["id"])
        (quantities if definition.is_a("IfcElementQuantity") else properties)[name] = values
    return properties, quantities


def _geometry(element: Entity, shapes: Any, *, has_quantities: bool) -> dict[str, Any] | None:
    """Bounding box from the body geometry (IfcOpenShell returns metres), plus volume and area
    for elements without quantity sets. An element whose shape cannot be built has none."""
    import ifcopenshell.geom
    import ifcopenshell.util.shape

    if not getattr(element, "Representation", None):
        return None
    try:
        shape = ifcopenshell.geom.create_shape(shapes, element)
    except RuntimeError:
        return None
    vertices = ifcopenshell.util.shape.get_vertices(shape.geometry)
    if not len(vertices):
        return None
    out: dict[str, Any] = {
        "bbox": [vertices.min(axis=0).tolist(), vertices.max(axis=0).tolist()],
    }
    if not has_quantities:
        volume = float(ifcopenshell.util.shape.get_volume(shape.geometry))
        out["volume"] = volume if volume > 0 else None  # open meshes have no volume
        out["area"] = float(ifcopenshell.util.shape.get_area(shape.geometry))
    return out


def element_document(element: Entity, ctx: ModelContext) -> dict[str, Any]:
    units = ctx.units
    properties, quantities = _property_and_quantity_sets(element, ctx.model)
    if not units.is_si:
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
        "materials": _materials(element, units.factors.get("LENGTHUNIT", 1.0)),
        "classification": _classification(element),
        "groups": [_ref(g) for g in ctx.groups.get(element.id(), ())],
        "properties": _sets(properties),
        "quantities": _sets(quantities),
        "relations": [
            {"kind": kind, "target": target}
            for kind, target in sorted(ctx.edges.get(element.id(), ()))
        ],
        "geometry": _geometry(element, ctx.shapes, has_quantities=bool(quantities))
        if ctx.shapes is not None
        else None,
    }


def element_documents(model: ifcopenshell.file) -> Iterator[dict[str, Any]]:
    """Every IfcProduct of the model (spatial structure included) as an element document."""
    ctx = ModelContext.of(model)
    for element in model.by_type("IfcProduct"):
        yield element_document(element, ctx)
