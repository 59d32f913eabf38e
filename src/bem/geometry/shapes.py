"""An IFC model's body geometry as glTF: IfcOpenShell's geometry iterator, one node per
element named by its GlobalId, one mesh per distinct representation (elements that share a
representation share its mesh; IfcOpenShell says so by giving them one geometry id).

Blocking and CPU-bound: run it in a worker thread. Shapes IfcOpenShell cannot build are
skipped by its iterator (it logs them); the rest of the model still gets its geometry.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import ifcopenshell
import ifcopenshell.geom
import numpy as np

from bem.geometry.glb import Colour, GlbWriter

DEFAULT = Colour(0.8, 0.8, 0.8)


@dataclass
class Counts:
    elements: int = 0  # nodes written
    meshes: int = 0


def _colour(material: ifcopenshell.ifcopenshell_wrapper.material) -> Colour:
    c = material.diffuse
    # IfcOpenShell says NaN for a style that sets no transparency: opaque.
    transparency = float(material.transparency)
    alpha = 1.0 if math.isnan(transparency) else 1.0 - transparency
    return Colour(round(c.r(), 4), round(c.g(), 4), round(c.b(), 4), round(alpha, 4))


def _parts(
    geometry: ifcopenshell.ifcopenshell_wrapper.Triangulation,
) -> list[tuple[np.ndarray, Colour]]:
    triangles = np.asarray(geometry.faces, dtype=np.uint32).reshape(-1, 3)
    ids = np.asarray(geometry.material_ids, dtype=np.int64)
    colours = [_colour(m) for m in geometry.materials]
    if not colours or len(ids) != len(triangles):
        return [(triangles, DEFAULT)]
    parts = []
    for index in np.unique(ids):
        colour = colours[index] if 0 <= index < len(colours) else DEFAULT
        parts.append((triangles[ids == index], colour))
    return parts


def _shapes(model: ifcopenshell.file, threads: int) -> Iterator[object]:
    settings = ifcopenshell.geom.settings()
    iterator = ifcopenshell.geom.iterator(settings, model, threads)
    if not iterator.initialize():
        return  # no element has a shape IfcOpenShell can build
    while True:
        yield iterator.get()
        if not iterator.next():
            return


def write_model(model: ifcopenshell.file, writer: GlbWriter, threads: int = 1) -> Counts:
    """Every element with body geometry, as a node of ``writer`` (a shape without
    triangles is no node)."""
    counts = Counts()
    meshes: dict[str, int | None] = {}
    for shape in _shapes(model, threads):
        geometry = shape.geometry  # type: ignore[attr-defined]
        key = str(geometry.id)
        if key not in meshes:
            positions = np.asarray(geometry.verts, dtype=np.float64).reshape(-1, 3)
            meshes[key] = writer.mesh(key, positions, _parts(geometry))
            counts.meshes += meshes[key] is not None
        if (mesh := meshes[key]) is not None:
            writer.node(shape.guid, mesh, shape.transformation.matrix)  # type: ignore[attr-defined]
            counts.elements += 1
    return counts
