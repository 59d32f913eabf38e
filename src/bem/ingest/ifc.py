"""IFC -> element documents, agreeing with ``ifcopenshell.util.element`` by construction.

The file importer (background jobs, units, geometry) builds on this; today it feeds the demo
model and the tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import ifcopenshell
import ifcopenshell.util.classification
import ifcopenshell.util.element as util

Entity = Any


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


def _materials(element: Entity) -> list[dict[str, Any]]:
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
            one(layer.Material, layer_thickness=float(layer.LayerThickness))
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


def element_document(element: Entity) -> dict[str, Any]:
    groups = [
        _ref(rel.RelatingGroup)
        for rel in _inverse(element, "HasAssignments")
        if rel.is_a("IfcRelAssignsToGroup")
    ]
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
        "materials": _materials(element),
        "classification": _classification(element),
        "groups": groups,
        "properties": _plain(util.get_psets(element, psets_only=True)),
        "quantities": _plain(util.get_psets(element, qtos_only=True)),
        "relations": _relations(element),
        "geometry": None,
    }


def element_documents(model: ifcopenshell.file) -> Iterator[dict[str, Any]]:
    """Every IfcProduct of the model (spatial structure included) as an element document."""
    for element in model.by_type("IfcProduct"):
        yield element_document(element)
