"""IFC -> element documents, agreeing with ``ifcopenshell.util.element`` by construction,
with lengths, areas, volumes and masses converted to SI (DOMAIN.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ifcopenshell
import ifcopenshell.util.classification
import ifcopenshell.util.element as util
import ifcopenshell.util.placement
import ifcopenshell.util.unit
from ifcopenshell import ifcopenshell_wrapper as wrapper

from bem.ingest.formats import BadSource
from bem.ingest.ifc_sets import SetValues, definitions_of, read_definition, set_key
from bem.ingest.ifc_units import Units, attribute, scalar_attributes, scaled

Entity = Any
# The schemas IfcOpenShell reads, by the exact names files declare (IFC4X1 or IFC4X3_RC2 are
# not IFC4 or IFC4X3: a prefix test let them through to a parse error).
SUPPORTED_SCHEMAS = tuple(name for name in wrapper.schema_names() if name.startswith("IFC"))
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


def _ref(entity: Entity | None) -> dict[str, Any] | None:
    if entity is None:
        return None
    return {"global_id": entity.GlobalId, "name": entity.Name, "ifc_class": entity.is_a()}


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
            out[name] = scaled(value, units.factors.get(unit_type) if unit_type else None)
    return out


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
        found = attribute(element_type, "PredefinedType")
        if found == "USERDEFINED" or not found:
            found = attribute(element_type, "ElementType") or attribute(element_type, "ProcessType")
        if found and found != "NOTDEFINED":
            return str(found)
    found = attribute(element, "PredefinedType")
    if found == "USERDEFINED" or not found:
        found = attribute(element, "ObjectType")
    return None if found is None else str(found)


def _materials(element: Entity, element_type: Entity | None, length: float) -> list[dict[str, Any]]:
    material = _material(element, element_type)
    if material is None:
        return []

    def one(m: Entity, layer_thickness: float | None = None, fraction: float | None = None) -> Any:
        category = attribute(m, "Category")
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
        identification = attribute(ref, "Identification") or attribute(ref, "ItemReference")
        out.append(
            {
                "system": system.Name if system is not None else None,
                "identification": identification,
                "name": ref.Name,
            }
        )
    return sorted(out, key=lambda c: (c["system"] or "", c["identification"] or ""))


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
    _frames: dict[int, Any] = field(default_factory=dict)  # world matrices by placement id

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

    def placement(self, element: Entity) -> list[float] | None:
        """Where the element's local origin is in the world (the translation of
        ``get_local_placement``), in metres to the micrometre: what tells identical twins
        apart when a diff finds renumbered elements again."""
        placement = attribute(element, "ObjectPlacement")
        if placement is None:
            return None
        try:
            origin = self._origin(placement)
        except (RuntimeError, AttributeError, TypeError, ValueError):  # a placement it cannot read
            return None
        length = self.units.factors.get("LENGTHUNIT", 1.0)
        return [round(float(v) * length, 6) + 0.0 for v in origin]

    def _origin(self, placement: Entity) -> Any:
        """The world position of a placement's origin: its parent's frame applied to its
        own point. The element's own axes do not move its origin, so they are not built
        (building each element's matrix was a quarter of extraction time)."""
        point = attribute(placement.RelativePlacement.Location, "Coordinates")
        if point is None:  # a point IfcOpenShell places with its geometry kernel
            return self._frame(placement, shared=False)[:3, 3]
        x, y, z = (*point, 0.0)[:3]  # a 2D placement's point lies in XY
        rel_to = placement.PlacementRelTo
        if rel_to is None:
            return x, y, z
        return (self._frame(rel_to, shared=True) @ (x, y, z, 1.0))[:3]

    def _frame(self, placement: Entity, *, shared: bool) -> Any:
        """``get_local_placement``, keeping the frames elements are placed in (storeys,
        hosts, assemblies) so each is computed once per model, not once per element."""
        found = self._frames.get(placement.id()) if shared else None
        if found is not None:
            return found
        local = ifcopenshell.util.placement.get_axis2placement(placement.RelativePlacement)
        rel_to = placement.PlacementRelTo
        found = local if rel_to is None else self._frame(rel_to, shared=True) @ local
        if shared:
            self._frames[placement.id()] = found
        return found

    def sets_of(
        self, element: Entity, element_type: Entity | None
    ) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """The element's property sets and quantity sets, merged as ``get_psets`` merges
        them (a set of the occurrence overrides the type's set of the same key, property by
        property), except that a property set and a quantity set never merge."""
        merged: tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]] = ({}, {})
        for definition, shared in definitions_of(element, element_type):
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
        "object_type": attribute(element, "ObjectType"),
        "tag": attribute(element, "Tag"),
        "attributes": _attributes(element, ctx.units),
        "placement": ctx.placement(element),
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
