"""IFC -> element documents, agreeing with ``ifcopenshell.util.element`` by construction,
with lengths, areas, volumes and masses converted to SI (DOMAIN.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import ifcopenshell
import ifcopenshell.util.classification
import ifcopenshell.util.element as util
import ifcopenshell.util.placement
import ifcopenshell.util.unit
from ifcopenshell import ifcopenshell_wrapper as wrapper

from bem.ingest.formats import BadSource

Entity = Any
# The schemas IfcOpenShell reads, by the exact names files declare (IFC4X1 or IFC4X3_RC2 are
# not IFC4 or IFC4X3: a prefix test let them through to a parse error).
SUPPORTED_SCHEMAS = tuple(name for name in wrapper.schema_names() if name.startswith("IFC"))
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
TRAILER = b"END-ISO-10303-21;"
HEADER_BYTES = 1 << 20  # FILE_DESCRIPTION can be long, but the header is never this long
_FILE_SCHEMA = re.compile(rb"FILE_SCHEMA\s*\(\s*\(\s*'([^']*)'")


def declared_schema(path: Path) -> str | None:
    """The schema the header's FILE_SCHEMA names, read before parsing the file (None when
    the header has none: the parser then says what is wrong)."""
    with path.open("rb") as file:
        head = file.read(HEADER_BYTES)
    header = head.split(b"ENDSEC;", 1)[0]
    found = _FILE_SCHEMA.search(header)
    return None if found is None else found.group(1).decode("ascii", "replace").strip()


def open_model(path: Path) -> ifcopenshell.file:
    """Open a STEP file, refusing truncated, unsupported-schema and unreadable files."""
    with path.open("rb") as file:
        file.seek(max(path.stat().st_size - 4096, 0))
        if TRAILER not in file.read():
            raise BadSource(
                f"The file does not end with {TRAILER.decode()}: it is truncated.",
                slug="truncated-file",
            )
    schema = declared_schema(path)
    if schema is not None and schema.upper() not in SUPPORTED_SCHEMAS:
        raise BadSource(
            f"Schema {schema or '(empty)'} is not supported; BEM reads "
            f"{', '.join(SUPPORTED_SCHEMAS)}.",
            slug="unsupported-schema",
            schema=schema,
        )
    try:
        return ifcopenshell.open(str(path))
    except (ifcopenshell.Error, OSError, UnicodeDecodeError) as exc:
        raise BadSource(f"IfcOpenShell cannot read the file: {exc}", slug="malformed-file") from exc


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
            found.append((index, attribute.name(), _unit_type(named)))
    return tuple(found)


@cache
def _unit_type(value_class: str) -> str:
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
            name = ifcopenshell.util.unit.get_full_unit_name(unit)
            units.declared[label] = {"unit": name, "to_si": factor}
            if factor != 1.0:
                units.factors[unit_type] = factor
        return units

    @property
    def is_si(self) -> bool:
        return not self.factors

    def _of_value(self, value: Entity | None, unit: Entity | None) -> float | None:
        """The factor for a typed value (``IfcLengthMeasure(115.)``) in the project's unit;
        a property with its own ``Unit`` is left as written."""
        if value is None or unit is not None or not self.factors:
            return None
        return self.factors.get(_unit_type(value.is_a()))

    def _of_property(self, prop: Entity, prefix: str, found: dict[str, float]) -> None:
        name = f"{prefix}{prop.Name}"
        unit = getattr(prop, "Unit", None)
        if prop.is_a("IfcPropertySingleValue"):
            factor = self._of_value(prop.NominalValue, unit)
            if factor is not None:
                found[name] = factor
        elif prop.is_a("IfcPropertyBoundedValue"):
            for bound in ("UpperBoundValue", "LowerBoundValue", "SetPointValue"):
                factor = self._of_value(getattr(prop, bound, None), unit)
                if factor is not None:
                    found[f"{name}.{bound}"] = factor
        elif prop.is_a("IfcPropertyListValue"):
            values = prop.ListValues or ()
            factor = self._of_value(values[0], unit) if values else None
            if factor is not None:
                found[name] = factor
        elif prop.is_a("IfcComplexProperty"):
            for member in prop.HasProperties or ():
                self._of_property(member, f"{name}.", found)


def _scaled(value: Any, factor: float | None) -> Any:
    """A number (or each number of a list) times ``factor``; with none, unchanged."""
    if factor is None or isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        return value * factor
    if isinstance(value, list):
        return [_scaled(v, factor) for v in value]
    return value


def _flat(name: str, value: Any, factors: dict[str, float]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    _flatten(name, value, out)
    for key, factor in factors.items():
        if key in out:
            out[key] = _scaled(out[key], factor)
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
                groups[name] = {name: _scaled(quantity[3], factor)}
            else:
                groups[name] = _flat(name, util.get_quantities([quantity])[name], {})
    elif definition.is_a("IfcPropertySet"):
        for prop in definition[4] or ():  # HasProperties
            name = prop[0]
            if prop.is_a("IfcPropertySingleValue"):  # Name, Description, NominalValue, Unit
                nominal = prop[2]
                factor = units._of_value(nominal, prop[3])
                value = _value(nominal.wrappedValue) if nominal is not None else None
                groups[name] = {name: _scaled(value, factor)}
            else:
                factors: dict[str, float] = {}
                units._of_property(prop, "", factors)
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


# Direct attributes with a field of their own in the element document.
DOCUMENT_ATTRIBUTES = frozenset(
    {"GlobalId", "Name", "Description", "ObjectType", "Tag", "PredefinedType"}
)


def _attributes(element: Entity, units: Units) -> dict[str, Any]:
    """The element's other scalar direct attributes that are set (``LongName``,
    ``Elevation``, ``OverallHeight``, ``CompositionType``, ...), measures in SI."""
    out: dict[str, Any] = {}
    for index, name, unit_type in scalar_attributes(units.schema, element.is_a()):
        if name in DOCUMENT_ATTRIBUTES:
            continue
        value = element[index]
        if value is not None:
            out[name] = _scaled(value, units.factors.get(unit_type) if unit_type else None)
    return out


def _placement(element: Entity, length: float) -> list[float] | None:
    """Where the element's local origin is in the world, in metres to the micrometre (what
    tells identical twins apart when a diff finds renumbered elements again)."""
    placement = getattr(element, "ObjectPlacement", None)
    if placement is None:
        return None
    try:
        matrix = ifcopenshell.util.placement.get_local_placement(placement)
    except (RuntimeError, AttributeError, TypeError, ValueError):  # a placement it cannot read
        return None
    return [round(float(v) * length, 6) + 0.0 for v in matrix[:3, 3]]


def _material(element: Entity, element_type: Entity | None) -> Entity | None:
    """``get_material(element, should_skip_usage=True)`` with the type already known (it
    looks the type up again: a third of extraction time went to ``get_type``)."""
    material = util.get_material(element, should_skip_usage=True, should_inherit=False)
    if material is None and element_type is not None:
        material = util.get_material(element_type, should_skip_usage=True)
    return material


def _predefined_type(element: Entity, element_type: Entity | None) -> str | None:
    """``get_predefined_type`` with the type already known: the type's predefined type (or
    its user-defined ElementType) wins, else the occurrence's (or its ObjectType)."""
    if element_type is not None:
        found = getattr(element_type, "PredefinedType", None)
        if found == "USERDEFINED" or not found:
            found = getattr(element_type, "ElementType", getattr(element_type, "ProcessType", None))
        if found and found != "NOTDEFINED":
            return str(found)
    found = getattr(element, "PredefinedType", None)
    if found == "USERDEFINED" or not found:
        found = getattr(element, "ObjectType", None)
    return found


def _materials(element: Entity, element_type: Entity | None, length: float) -> list[dict[str, Any]]:
    material = _material(element, element_type)
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
    _shared_sets: dict[int, SetValues] = field(default_factory=dict)

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

    def read_set(self, definition: Entity, *, shared: bool) -> SetValues:
        """One definition's values as ``get_property_definition`` reads them, flattened and
        in SI. Kept when other elements share it (type sets, Revit's shared sets), so each
        shared set is read and converted once per model, not once per element."""
        found = self._shared_sets.get(definition.id()) if shared else None
        if found is not None:
            return found
        groups = read_definition(definition, self.units)
        found = (set_key(definition), definition.is_a("IfcElementQuantity"), groups)
        if shared:
            self._shared_sets[definition.id()] = found
        return found

    def sets_of(
        self, element: Entity, element_type: Entity | None
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """The element's property sets and quantity sets, merged as ``get_psets`` merges
        them (a set of the occurrence overrides the type's set of the same key, property by
        property), except that a property set and a quantity set never merge."""
        merged: tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]] = ({}, {})
        for definition, shared in _definitions(element, element_type):
            key, is_quantities, groups = self.read_set(definition, shared=shared)
            merged[is_quantities].setdefault(key, {}).update(groups)
        properties, quantities = (
            {
                key: {n: v for group in groups.values() for n, v in group.items()}
                for key, groups in section.items()
            }
            for section in merged
        )
        return properties, quantities


def set_key(definition: Entity) -> str:
    """A set's key in the element document: its Name, or, for a set without one (BricsCAD
    writes ``$``, Renga ``''``), its class name (``IfcElementQuantity``)."""
    name = definition.Name
    return name if isinstance(name, str) and name.strip() else definition.is_a()


# A set read from one definition: its key, whether it holds quantities, and its values in SI
# grouped by top-level property (an occurrence's property replaces the type's whole).
SetValues = tuple[str, bool, dict[str, dict[str, Any]]]


def _definitions(element: Entity, element_type: Entity | None) -> Iterator[tuple[Entity, bool]]:
    """The definitions ``get_psets`` reads, in its order (the type's, then the occurrence's,
    which override them), each with whether it may be shared by other elements."""
    if element_type is not None:
        for definition in element_type.HasPropertySets or ():
            yield definition, True
    for rel in _inverse(element, "IsDefinedBy"):
        if not rel.is_a("IfcRelDefinesByProperties"):
            continue
        definition = rel.RelatingPropertyDefinition
        shared = len(rel.RelatedObjects or ()) > 1
        if definition.is_a("IfcPropertySetDefinitionSet"):
            for member in definition.wrappedValue:
                yield member, shared
        else:
            yield definition, shared


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
    element_type = util.get_type(element)
    if element_type is element:
        element_type = None
    properties, quantities = ctx.sets_of(element, element_type)
    return {
        "global_id": element.GlobalId,
        "ifc_class": element.is_a(),
        "predefined_type": _predefined_type(element, element_type),
        "name": element.Name,
        "description": element.Description,
        "object_type": getattr(element, "ObjectType", None),
        "tag": getattr(element, "Tag", None),
        "attributes": _attributes(element, ctx.units),
        "placement": _placement(element, ctx.units.factors.get("LENGTHUNIT", 1.0)),
        "type": _ref(element_type),
        "container": _ref(util.get_container(element)),
        "parent": _ref(util.get_aggregate(element)),
        "materials": _materials(element, element_type, ctx.units.factors.get("LENGTHUNIT", 1.0)),
        "classification": _classification(element),
        "groups": [_ref(g) for g in ctx.groups.get(element.id(), ())],
        "properties": properties,
        "quantities": quantities,
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
