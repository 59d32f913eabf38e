"""Deterministic IFC4 test models built with ``ifcopenshell.api``.

``generate(n)`` makes a building of exactly ``n`` elements (spaces included; site, building,
storeys and openings are extra): repeating bays of walls, a slab, columns, beams, a door and a
window filling openings in the walls, and a space, spread over storeys. Every element has
property sets, quantity sets, a type with its own property sets (which occurrences partly
override), materials (layer sets through the wall type, single materials elsewhere),
classification references and a fire-compartment group. Same ``n`` and ``seed`` give the
same file, GlobalIds included. ``mutate()`` turns a model into a realistic next version.

Units are SI (metres) unless ``Quirks`` asks for what real exports do (issue #16): millimetres
with undeclared area and volume units (Renga), sets without a name (BricsCAD, Renga),
predefined door and window sets. ``regenerate_ids()`` gives every rooted entity a new GlobalId
(a re-export from another tool). ``small(schema)`` is a tiny model in any schema BEM reads,
in metres or millimetres.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import ifcopenshell
import ifcopenshell.api.aggregate
import ifcopenshell.api.classification
import ifcopenshell.api.feature
import ifcopenshell.api.group
import ifcopenshell.api.material
import ifcopenshell.api.project
import ifcopenshell.api.pset
import ifcopenshell.api.root
import ifcopenshell.api.spatial
import ifcopenshell.api.type
import ifcopenshell.api.unit
import ifcopenshell.guid
import ifcopenshell.util.element

Entity = Any  # ifcopenshell.entity_instance

BAY = (
    "wall",
    "wall",
    "wall",
    "wall",
    "slab",
    "column",
    "column",
    "beam",
    "beam",
    "door",
    "window",
    "space",
)
ELEMENTS_PER_STOREY = 48
MAX_STOREYS = 60
FIRE_RATINGS = ("REI30", "REI60", "REI90", "REI120")


@dataclass(frozen=True)
class Quirks:
    """What authoring tools write that a generated model otherwise would not; all off by
    default, so the default model stays the same file."""

    millimetres: bool = False  # length in mm; area and volume undeclared, written in mm2, mm3
    unnamed_sets: bool = False  # slab quantity sets named $ (BricsCAD), column ones '' (Renga)
    predefined_sets: bool = False  # IfcDoorLiningProperties / IfcWindowPanelProperties on types
    parts: bool = False  # an IfcBuildingElementPart aggregated into every column
    placements: bool = False  # local placements nested site > building > storey > element
    # A body (an extruded box) on walls, slabs, columns, beams, doors and windows, one
    # representation shared by elements of equal size; implies placements.
    geometry: bool = False


_NAMED = object()  # a set keeps the name it was made with


def _guid(rng: random.Random) -> str:
    return str(ifcopenshell.guid.compress(uuid.UUID(int=rng.getrandbits(128)).hex))


class _Builder:
    def __init__(self, f: ifcopenshell.file, rng: random.Random, quirks: Quirks = Quirks()) -> None:
        self.f = f
        self.rng = rng
        self.quirks = quirks
        self.mm = 1000.0 if quirks.millimetres else 1.0
        self.first_new_id = max((e.id() for e in f), default=0) + 1
        self.named: set[int] = set()
        self.boxes: list[tuple[Entity, tuple[float, float, float]]] = []

    def box(self, el: Entity, size: tuple[float, float, float]) -> None:
        """Give ``el`` a body of ``size`` (x, y, z in metres) when geometry is asked for."""
        if self.quirks.geometry:
            self.boxes.append((el, size))

    def entity(self, ifc_class: str, name: str, predefined_type: str | None = None) -> Entity:
        el = ifcopenshell.api.root.create_entity(
            self.f, ifc_class=ifc_class, name=name, predefined_type=predefined_type
        )
        el.GlobalId = _guid(self.rng)
        self.named.add(el.id())
        return el

    def finish(self) -> ifcopenshell.file:
        """Give the relationships and property sets the API created seeded GlobalIds too."""
        for entity in sorted(self.f.by_type("IfcRoot"), key=lambda e: e.id()):
            if entity.id() >= self.first_new_id and entity.id() not in self.named:
                entity.GlobalId = _guid(self.rng)
        return self.f

    def pset(self, el: Entity, name: str, props: dict[str, Any]) -> None:
        pset = ifcopenshell.api.pset.add_pset(self.f, product=el, name=name)
        ifcopenshell.api.pset.edit_pset(self.f, pset=pset, properties=props)

    def qto(
        self, el: Entity, name: str, quantities: dict[str, float], set_name: Any = _NAMED
    ) -> None:
        """Quantities given in SI, written in the file's units (by their names: areas end in
        Area, volumes in Volume). A ``set_name`` (None, '') replaces ``name`` in the file."""
        qto = ifcopenshell.api.pset.add_qto(self.f, product=el, name=name)
        written = {key: value * self.scale(key) for key, value in quantities.items()}
        ifcopenshell.api.pset.edit_qto(self.f, qto=qto, properties=written)
        if set_name is not _NAMED:
            qto.Name = set_name

    def scale(self, quantity: str) -> float:
        power = 3 if quantity.endswith("Volume") else 2 if quantity.endswith("Area") else 1
        return float(self.mm**power)


def _spatial(b: _Builder, storeys: int) -> tuple[Entity, list[Entity]]:
    f = b.f
    project = b.entity("IfcProject", "BEM test project")
    if b.quirks.millimetres:  # as Renga: no area or volume unit
        units = [ifcopenshell.api.unit.add_si_unit(f, unit_type="LENGTHUNIT", prefix="MILLI")]
    else:
        units = [
            ifcopenshell.api.unit.add_si_unit(f, unit_type=t)
            for t in ("LENGTHUNIT", "AREAUNIT", "VOLUMEUNIT")
        ]
    ifcopenshell.api.unit.assign_unit(f, units=units)
    site = b.entity("IfcSite", "Site")
    building = b.entity("IfcBuilding", "Building A")
    ifcopenshell.api.aggregate.assign_object(f, products=[site], relating_object=project)
    ifcopenshell.api.aggregate.assign_object(f, products=[building], relating_object=site)
    levels = [b.entity("IfcBuildingStorey", f"Level {i:02d}") for i in range(storeys)]
    ifcopenshell.api.aggregate.assign_object(f, products=levels, relating_object=building)
    for i, level in enumerate(levels):
        level.Elevation = 3.0 * i * b.mm
    return project, levels


def _types(b: _Builder) -> dict[str, Entity]:
    f = b.f
    brick = ifcopenshell.api.material.add_material(f, name="Brick", category="masonry")
    insulation = ifcopenshell.api.material.add_material(
        f, name="Mineral wool", category="insulation"
    )
    plaster = ifcopenshell.api.material.add_material(f, name="Gypsum plaster", category="plaster")
    types: dict[str, Entity] = {}
    for key, name, layers, external in (
        ("wall_ext", "WT-EXT-300", ((brick, 0.115), (insulation, 0.14), (plaster, 0.045)), True),
        ("wall_int", "WT-INT-100", ((plaster, 0.0125), (brick, 0.075), (plaster, 0.0125)), False),
    ):
        wall_type = b.entity("IfcWallType", name, "STANDARD")
        layer_set = ifcopenshell.api.material.add_material_set(
            f, name=name, set_type="IfcMaterialLayerSet"
        )
        for material, thickness in layers:
            layer = ifcopenshell.api.material.add_layer(f, layer_set=layer_set, material=material)
            ifcopenshell.api.material.edit_layer(
                f, layer=layer, attributes={"LayerThickness": thickness * b.mm}
            )
        ifcopenshell.api.material.assign_material(
            f, products=[wall_type], type="IfcMaterialLayerSet", material=layer_set
        )
        b.pset(wall_type, "Pset_WallCommon", {"IsExternal": external, "FireRating": "REI60"})
        types[key] = wall_type
    for key, ifc_class, name, pset, props in (
        ("slab", "IfcSlabType", "ST-FLOOR-250", "Pset_SlabCommon", {"LoadBearing": True}),
        ("column", "IfcColumnType", "CT-RC-400", "Pset_ColumnCommon", {"LoadBearing": True}),
        ("beam", "IfcBeamType", "BT-HEA-300", "Pset_BeamCommon", {"LoadBearing": True}),
        ("door", "IfcDoorType", "DT-900x2100", "Pset_DoorCommon", {"FireRating": "EI30"}),
        ("window", "IfcWindowType", "WT-1200x1500", "Pset_WindowCommon", {"IsExternal": True}),
    ):
        type_obj = b.entity(ifc_class, name)
        b.pset(type_obj, pset, props)
        types[key] = type_obj
    if b.quirks.predefined_sets:  # ArchiCAD and Revit write these; values in file units
        lining = f.createIfcDoorLiningProperties(
            _guid(b.rng), None, "Door lining", None, 0.115 * b.mm, 0.05 * b.mm
        )
        panel = f.createIfcWindowPanelProperties(
            _guid(b.rng), None, "Window panel", None, "SIDEHUNGRIGHTHAND", "MIDDLE", 0.07 * b.mm
        )
        types["door"].HasPropertySets = (*(types["door"].HasPropertySets or ()), lining)
        types["window"].HasPropertySets = (*(types["window"].HasPropertySets or ()), panel)
    return types


def _add_bay_element(b: _Builder, kind: str, n: int, storey: int, ctx: dict[str, Any]) -> Entity:
    rng, f = b.rng, b.f
    length = round(rng.uniform(2.0, 8.0), 2)
    if kind == "wall":
        external = n % 4 < 2
        wall = b.entity("IfcWall", f"Wall {storey}-{n}", "STANDARD")
        width = 0.3 if external else 0.1
        b.pset(
            wall,
            "Pset_WallCommon",
            {"LoadBearing": external, "FireRating": rng.choice(FIRE_RATINGS)},
        )
        b.qto(
            wall,
            "Qto_WallBaseQuantities",
            {
                "Length": length,
                "Height": 3.0,
                "Width": width,
                "NetSideArea": round(length * 3.0, 3),
                "NetVolume": round(length * 3.0 * width, 4),
            },
        )
        b.box(wall, (length, width, 3.0))
        ctx["typed"]["wall_ext" if external else "wall_int"].append(wall)
        ctx["classified"]["Ss_25_10_30"].append(wall)
        ctx["walls"].append(wall)
        return wall
    if kind == "slab":
        slab = b.entity("IfcSlab", f"Slab {storey}-{n}", "FLOOR")
        area = round(length * 6.0, 3)
        b.qto(
            slab,
            "Qto_SlabBaseQuantities",
            {"Width": 0.25, "NetArea": area, "NetVolume": round(area * 0.25, 4)},
            set_name=None if b.quirks.unnamed_sets else _NAMED,
        )
        b.box(slab, (length, 6.0, 0.25))
        ctx["typed"]["slab"].append(slab)
        ctx["materials"]["Concrete C30/37"].append(slab)
        ctx["classified"]["Ss_30_12_05"].append(slab)
        return slab
    if kind in ("column", "beam"):
        ifc_class = "IfcColumn" if kind == "column" else "IfcBeam"
        el = b.entity(
            ifc_class, f"{kind.title()} {storey}-{n}", "COLUMN" if kind == "column" else "BEAM"
        )
        size = 0.4 if kind == "column" else 0.3
        span = 3.0 if kind == "column" else length
        b.qto(
            el,
            f"Qto_{kind.title()}BaseQuantities",
            {"Length": span, "NetVolume": round(span * size * size, 4)},
            set_name="" if b.quirks.unnamed_sets and kind == "column" else _NAMED,
        )
        b.pset(el, "BEM_Cost", {"UnitCost": round(rng.uniform(100, 900), 2), "Phase": "New"})
        b.box(el, (size, size, span) if kind == "column" else (span, size, size))
        ctx["typed"][kind].append(el)
        ctx["materials"]["Concrete C30/37" if kind == "column" else "Steel S355"].append(el)
        return el
    if kind in ("door", "window"):
        ifc_class = "IfcDoor" if kind == "door" else "IfcWindow"
        el = b.entity(ifc_class, f"{kind.title()} {storey}-{n}", kind.upper())
        width, height = (0.9, 2.1) if kind == "door" else (1.2, 1.5)
        el.OverallWidth, el.OverallHeight = width * b.mm, height * b.mm
        b.box(el, (width, 0.1, height))
        b.qto(
            el,
            f"Qto_{kind.title()}BaseQuantities",
            {"Width": width, "Height": height, "Area": round(width * height, 3)},
        )
        if kind == "door":
            b.pset(
                el,
                "Pset_DoorCommon",
                {"FireRating": rng.choice(("EI30", "EI60")), "IsExternal": False},
            )
        host = ctx["walls"][-1] if ctx["walls"] else None
        if host is not None:
            opening = b.entity("IfcOpeningElement", f"Opening for {el.Name}", "OPENING")
            ifcopenshell.api.feature.add_feature(f, feature=opening, element=host)
            ifcopenshell.api.feature.add_filling(f, opening=opening, element=el)
        ctx["typed"][kind].append(el)
        ctx["fire_group"].append(el)
        return el
    space = b.entity("IfcSpace", f"Room {storey}.{n}", "INTERNAL")
    area = round(rng.uniform(8.0, 40.0), 2)
    b.pset(space, "Pset_SpaceCommon", {"IsExternal": False, "Reference": f"R{storey:02d}{n:04d}"})
    b.qto(space, "Qto_SpaceBaseQuantities", {"NetFloorArea": area, "Height": 2.7})
    return space


def generate(n_elements: int, seed: int = 0, quirks: Quirks = Quirks()) -> ifcopenshell.file:
    """A model with exactly ``n_elements`` elements (10 to 1,000,000; ``Quirks.parts`` adds
    one part per column)."""
    if not 1 <= n_elements <= 1_000_000:
        raise ValueError("n_elements must be between 1 and 1,000,000")
    rng = random.Random(seed)
    f = ifcopenshell.api.project.create_file(version="IFC4")
    b = _Builder(f, rng, quirks)
    storey_count = min(MAX_STOREYS, max(1, -(-n_elements // ELEMENTS_PER_STOREY)))
    _, storeys = _spatial(b, storey_count)
    types = _types(b)
    materials = {
        name: ifcopenshell.api.material.add_material(f, name=name, category=category)
        for name, category in (("Concrete C30/37", "concrete"), ("Steel S355", "steel"))
    }
    uniclass = ifcopenshell.api.classification.add_classification(f, classification="Uniclass 2015")
    ctx: dict[str, Any] = {
        "typed": {k: [] for k in types},
        "materials": {k: [] for k in materials},
        "classified": {"Ss_25_10_30": [], "Ss_30_12_05": []},
        "walls": [],
        "fire_group": [],
    }
    per_storey: list[list[Entity]] = [[] for _ in storeys]
    for i in range(n_elements):
        storey = (i // len(BAY)) % storey_count
        if i % len(BAY) == 0:
            ctx["walls"] = []  # doors and windows fill openings in their own bay's walls
        el = _add_bay_element(b, BAY[i % len(BAY)], i, storey, ctx)
        per_storey[storey].append(el)
    for storey, elements in zip(storeys, per_storey, strict=True):
        spaces = [e for e in elements if e.is_a("IfcSpace")]
        others = [e for e in elements if not e.is_a("IfcSpace")]
        if others:
            ifcopenshell.api.spatial.assign_container(f, products=others, relating_structure=storey)
        if spaces:
            ifcopenshell.api.aggregate.assign_object(f, products=spaces, relating_object=storey)
    for key, elements in ctx["typed"].items():
        if elements:
            ifcopenshell.api.type.assign_type(f, related_objects=elements, relating_type=types[key])
    for name, elements in ctx["materials"].items():
        if elements:
            ifcopenshell.api.material.assign_material(
                f, products=elements, material=materials[name]
            )
    for ident, elements in ctx["classified"].items():
        if elements:
            ifcopenshell.api.classification.add_reference(
                f,
                products=elements,
                identification=ident,
                name="Walls" if ident == "Ss_25_10_30" else "Floors",
                classification=uniclass,
            )
    if ctx["fire_group"]:
        group = b.entity("IfcGroup", "Fire compartment 1")
        ifcopenshell.api.group.assign_group(f, products=ctx["fire_group"], group=group)
    if quirks.parts:  # a building element in IFC2X3, an element component since IFC4
        for column in ctx["typed"]["column"]:
            part = b.entity("IfcBuildingElementPart", f"Cap of {column.Name}")
            ifcopenshell.api.aggregate.assign_object(f, products=[part], relating_object=column)
    if quirks.placements or quirks.geometry:
        _place_all(b, storeys)
    if b.boxes:
        _bodies(b)
    return b.finish()


def _bodies(b: _Builder) -> None:
    """Extruded boxes, one IfcShapeRepresentation per size shared by its elements (as
    authoring tools share a type's representation), in the file's length unit."""
    f = b.f
    origin = f.createIfcAxis2Placement3D(f.createIfcCartesianPoint((0.0, 0.0, 0.0)))
    up = f.createIfcDirection((0.0, 0.0, 1.0))
    model = f.createIfcGeometricRepresentationContext(None, "Model", 3, 1e-5, origin)
    body = f.createIfcGeometricRepresentationSubContext(
        "Body", "Model", None, None, None, None, model, None, "MODEL_VIEW", None
    )
    f.by_type("IfcProject")[0].RepresentationContexts = [model]
    shared: dict[tuple[float, float, float], Entity] = {}
    for el, size in b.boxes:
        if (shape := shared.get(size)) is None:
            x, y, z = (v * b.mm for v in size)
            centre = f.createIfcAxis2Placement2D(f.createIfcCartesianPoint((x / 2, y / 2)))
            profile = f.createIfcRectangleProfileDef("AREA", None, centre, x, y)
            solid = f.createIfcExtrudedAreaSolid(profile, origin, up, z)
            shape = shared[size] = f.createIfcShapeRepresentation(
                body, "Body", "SweptSolid", [solid]
            )
        el.Representation = f.createIfcProductDefinitionShape(None, None, [shape])


def _place(b: _Builder, relative_to: Entity | None, at: tuple[float, ...], turn: bool) -> Entity:
    """A local placement ``at`` (metres, written in file units) from ``relative_to``; turned
    a quarter about Z when ``turn`` (so a child's offsets must be rotated by its parent's)."""
    f = b.f
    point = f.createIfcCartesianPoint(tuple(v * b.mm for v in at))
    x_axis = f.createIfcDirection((0.0, 1.0, 0.0)) if turn else None
    axes = f.createIfcAxis2Placement3D(point, f.createIfcDirection((0.0, 0.0, 1.0)), x_axis)
    return f.createIfcLocalPlacement(relative_to, axes)


CONTAINS = "IfcRelContainedInSpatialStructure"


def _place_all(b: _Builder, storeys: list[Entity]) -> None:
    """Placements as authoring tools nest them: the building off the site, storeys at their
    elevation, each element from its storey (or the element it is part of), openings from
    the wall they void, fillings from their opening."""
    f = b.f
    site = _place(b, None, (0.0, 0.0, 0.0), False)
    f.by_type("IfcSite")[0].ObjectPlacement = site
    building = _place(b, site, (10.0, 20.0, 0.0), True)
    f.by_type("IfcBuilding")[0].ObjectPlacement = building
    for storey in storeys:
        storey.ObjectPlacement = _place(b, building, (0.0, 0.0, storey.Elevation / b.mm), False)
    children = [(r.RelatingStructure, r.RelatedElements) for r in f.by_type(CONTAINS)]
    children += [(r.RelatingObject, r.RelatedObjects) for r in f.by_type("IfcRelAggregates")]
    for parent, elements in children:  # containers first: a column is placed before its part
        if not parent.is_a("IfcProduct"):
            continue  # the project
        for i, element in enumerate(elements):
            if element.ObjectPlacement is None and not getattr(element, "FillsVoids", ()):
                at = (1.5 * (i % 40), 2.0 * (i // 40), 0.0)
                element.ObjectPlacement = _place(b, parent.ObjectPlacement, at, i % 2 == 1)
    for rel in f.by_type("IfcRelVoidsElement"):
        host = rel.RelatingBuildingElement.ObjectPlacement
        rel.RelatedOpeningElement.ObjectPlacement = _place(b, host, (0.5, 0.0, 0.0), False)
    for rel in f.by_type("IfcRelFillsElement"):
        opening = rel.RelatingOpeningElement.ObjectPlacement
        rel.RelatedBuildingElement.ObjectPlacement = _place(b, opening, (0.0, 0.0, 0.1), False)


def mutate(model: ifcopenshell.file, seed: int = 1, fraction: float = 0.05) -> ifcopenshell.file:
    """A "v2" of ``model``: about ``fraction`` of the walls each removed, added, moved to
    another storey and re-propertied. The input is not changed."""
    rng = random.Random(seed)
    f = ifcopenshell.file.from_string(model.to_string())
    b = _Builder(f, rng)
    walls = sorted(f.by_type("IfcWall"), key=lambda w: w.GlobalId)
    storeys = sorted(f.by_type("IfcBuildingStorey"), key=lambda s: s.Name)
    count = max(1, int(len(walls) * fraction))
    picked = rng.sample(walls, min(len(walls), 3 * count))
    removed, moved, repropertied = picked[:count], picked[count : 2 * count], picked[2 * count :]
    for wall in removed:
        for rel in list(wall.HasOpenings):
            ifcopenshell.api.root.remove_product(f, product=rel.RelatedOpeningElement)
        ifcopenshell.api.root.remove_product(f, product=wall)
    for wall in moved:
        current = ifcopenshell.util.element.get_container(wall)
        others = [s for s in storeys if s != current]
        if others:
            target = rng.choice(others)
            ifcopenshell.api.spatial.assign_container(f, products=[wall], relating_structure=target)
    for wall in repropertied:
        pset = next(
            d.RelatingPropertyDefinition
            for d in wall.IsDefinedBy
            if d.is_a("IfcRelDefinesByProperties")
            and d.RelatingPropertyDefinition.Name == "Pset_WallCommon"
        )
        ifcopenshell.api.pset.edit_pset(
            f, pset=pset, properties={"FireRating": "REI240", "AcousticRating": "Rw 52"}
        )
    added = []
    for i in range(count):
        wall = b.entity("IfcWall", f"Wall added {i}", "STANDARD")
        b.pset(wall, "Pset_WallCommon", {"LoadBearing": False, "FireRating": "REI30"})
        b.qto(
            wall,
            "Qto_WallBaseQuantities",
            {"Length": 4.0, "Height": 3.0, "Width": 0.1, "NetVolume": 1.2},
        )
        added.append(wall)
    if added:
        ifcopenshell.api.spatial.assign_container(f, products=added, relating_structure=storeys[0])
    return b.finish()


def regenerate_ids(model: ifcopenshell.file, seed: int = 1) -> ifcopenshell.file:
    """A copy of ``model`` in which every rooted entity has a new GlobalId, as a re-export
    from another tool or a copied model has (entity ids, ``#n``, stay: they pair the two)."""
    rng = random.Random(seed)
    f = ifcopenshell.file.from_string(model.to_string())
    for entity in sorted(f.by_type("IfcRoot"), key=lambda e: e.id()):
        entity.GlobalId = _guid(rng)
    return f


@contextmanager
def owner_history(f: ifcopenshell.file) -> Iterator[None]:
    """IFC2X3 needs an owner history on every rooted entity: a user and an application."""
    import ifcopenshell.api.owner.settings as owner

    org = f.createIfcOrganization(Name="BEM")
    user = f.createIfcPersonAndOrganization(f.createIfcPerson(FamilyName="Tester"), org)
    app = f.createIfcApplication(org, "1", "BEM tests", "bem")
    saved = owner.get_user, owner.get_application
    owner.get_user, owner.get_application = (lambda _f: user), (lambda _f: app)
    try:
        yield
    finally:
        owner.get_user, owner.get_application = saved


def small(schema: str = "IFC4", *, millimetres: bool = False) -> ifcopenshell.file:
    """A storey of three walls with a type (whose property set the first wall overrides), a
    material and quantities, in any schema BEM reads (IFC2X3, IFC4, IFC4X3)."""
    f = ifcopenshell.api.project.create_file(version=schema)
    with owner_history(f) if schema == "IFC2X3" else nullcontext():
        project = ifcopenshell.api.root.create_entity(f, ifc_class="IfcProject", name="Small")
        prefix = "MILLI" if millimetres else None
        unit = ifcopenshell.api.unit.add_si_unit(f, unit_type="LENGTHUNIT", prefix=prefix)
        ifcopenshell.api.unit.assign_unit(f, units=[unit])
        parent = project
        for ifc_class, name in (
            ("IfcSite", "Site"),
            ("IfcBuilding", "B"),
            ("IfcBuildingStorey", "L1"),
        ):
            child = ifcopenshell.api.root.create_entity(f, ifc_class=ifc_class, name=name)
            ifcopenshell.api.aggregate.assign_object(f, products=[child], relating_object=parent)
            parent = child
        wall_type = ifcopenshell.api.root.create_entity(f, ifc_class="IfcWallType", name="WT")
        pset = ifcopenshell.api.pset.add_pset(f, product=wall_type, name="Pset_WallCommon")
        ifcopenshell.api.pset.edit_pset(
            f, pset=pset, properties={"FireRating": "REI60", "IsExternal": True}
        )
        concrete = ifcopenshell.api.material.add_material(f, name="Concrete")
        length = 4000.0 if millimetres else 4.0
        walls = []
        for i in range(3):
            wall = ifcopenshell.api.root.create_entity(f, ifc_class="IfcWall", name=f"W{i}")
            ifcopenshell.api.spatial.assign_container(f, products=[wall], relating_structure=parent)
            ifcopenshell.api.type.assign_type(f, related_objects=[wall], relating_type=wall_type)
            ifcopenshell.api.material.assign_material(f, products=[wall], material=concrete)
            qto = ifcopenshell.api.pset.add_qto(f, product=wall, name="Qto_WallBaseQuantities")
            ifcopenshell.api.pset.edit_qto(f, qto=qto, properties={"Length": length})
            walls.append(wall)
        own = ifcopenshell.api.pset.add_pset(f, product=walls[0], name="Pset_WallCommon")
        ifcopenshell.api.pset.edit_pset(f, pset=own, properties={"FireRating": "REI90"})
    return f
