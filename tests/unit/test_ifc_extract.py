"""Structured IFC properties become flat JSON values, and the element document's relations
and groups (indexed once per model) match IfcOpenShell's inverse attributes."""

from __future__ import annotations

import ifcopenshell
import ifcopenshell.api.pset
import ifcopenshell.api.root

from bem.ingest.ifc import ModelContext, element_document, element_documents
from bem.testing import ifcgen
from bem.versions.schemas import ElementIn


def test_complex_enumerated_and_bounded_properties_are_flattened() -> None:
    f = ifcopenshell.api.project.create_file(version="IFC4")
    wall = ifcopenshell.api.root.create_entity(f, ifc_class="IfcWall", name="W")
    pset = ifcopenshell.api.pset.add_pset(f, product=wall, name="X")
    member = f.createIfcPropertySingleValue("A", None, f.createIfcLabel("a"))
    pset.HasProperties = [
        f.createIfcComplexProperty("C", None, "usage", [member]),
        f.createIfcPropertyEnumeratedValue(
            "E", None, [f.createIfcLabel("x"), f.createIfcLabel("y")]
        ),
        f.createIfcPropertyBoundedValue(
            "B", None, f.createIfcLengthMeasure(2.0), f.createIfcLengthMeasure(1.0)
        ),
    ]
    doc = element_document(wall, ModelContext.of(f))
    assert doc["properties"] == {
        "X": {
            "C.A": "a",
            "E": ["x", "y"],
            "B.UpperBoundValue": 2.0,
            "B.LowerBoundValue": 1.0,
            "B.SetPointValue": None,
        }
    }
    ElementIn.model_validate(doc)  # and the importer accepts it


def _inverse_edges(element: ifcopenshell.entity_instance) -> set[tuple[str, str]]:
    edges = set()
    for rel in element.HasOpenings or ():
        edges.add(("voided_by", rel.RelatedOpeningElement.GlobalId))
    for rel in getattr(element, "VoidsElements", None) or ():
        edges.add(("voids", rel.RelatingBuildingElement.GlobalId))
    for rel in getattr(element, "HasFillings", None) or ():
        edges.add(("filled_by", rel.RelatedBuildingElement.GlobalId))
    for rel in getattr(element, "FillsVoids", None) or ():
        edges.add(("fills", rel.RelatingOpeningElement.GlobalId))
    for rel in getattr(element, "ConnectedTo", None) or ():
        edges.add(("connected_to", rel.RelatedElement.GlobalId))
    for rel in getattr(element, "ConnectedFrom", None) or ():
        edges.add(("connected_to", rel.RelatingElement.GlobalId))
    return edges


def test_relations_and_groups_match_the_inverse_attributes() -> None:
    model = ifcgen.generate(200)
    docs = {d["global_id"]: d for d in element_documents(model)}
    with_edges = with_groups = 0
    for element in model.by_type("IfcElement"):
        doc = docs[element.GlobalId]
        edges = {(r["kind"], r["target"]) for r in doc["relations"]}
        assert edges == _inverse_edges(element)
        groups = {
            rel.RelatingGroup.GlobalId
            for rel in element.HasAssignments or ()
            if rel.is_a("IfcRelAssignsToGroup")
        }
        assert {g["global_id"] for g in doc["groups"]} == groups
        with_edges += bool(edges)
        with_groups += bool(groups)
    assert with_edges > 10 and with_groups > 0  # the generator makes both
