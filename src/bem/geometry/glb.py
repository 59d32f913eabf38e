"""A binary glTF 2.0 file (GLB) written as meshes arrive, with bounded memory.

Vertex and index data go to a spool file as each mesh is added; only the JSON description
(a few hundred bytes per node and mesh) stays in memory until :meth:`GlbWriter.finish`
writes the header, the JSON chunk and the binary chunk. IFC is Z-up and glTF Y-up: one root
node turns the model, and element nodes hang under it with their placements untouched.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import orjson

MAGIC = 0x46546C67  # "glTF"
JSON_CHUNK = 0x4E4F534A
BIN_CHUNK = 0x004E4942
FLOAT, UINT = 5126, 5125  # componentType
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963
TRIANGLES = 4
# Column-major, as glTF stores matrices: (x, y, z) in IFC is (x, z, -y) in glTF.
Z_UP_TO_Y_UP = [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
IDENTITY = (1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class Colour:
    """A surface colour: linear RGB in 0..1 and opacity."""

    r: float
    g: float
    b: float
    alpha: float = 1.0


@dataclass
class Written:
    path: Path
    size: int  # bytes


class GlbWriter:
    """Add meshes (:meth:`mesh`) and the nodes that show them (:meth:`node`), then
    :meth:`finish`. Use as a context manager so the spool file is always removed."""

    def __init__(self, workdir: Path, generator: str = "BEM") -> None:
        self.spool: IO[bytes] = tempfile.TemporaryFile(dir=workdir)  # noqa: SIM115 (closed in close())
        self.offset = 0
        self.json: dict[str, Any] = {
            "asset": {"version": "2.0", "generator": generator},
            "scene": 0,
            "scenes": [{"nodes": [0]}],
            "nodes": [{"name": "model", "matrix": Z_UP_TO_Y_UP, "children": []}],
            "meshes": [],
            "materials": [],
            "accessors": [],
            "bufferViews": [],
        }
        self.materials: dict[Colour, int] = {}

    def __enter__(self) -> GlbWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.spool.close()

    def _view(self, data: bytes, target: int) -> int:
        """Append ``data`` (its length a multiple of 4) as a buffer view; its index."""
        views = self.json["bufferViews"]
        views.append(
            {"buffer": 0, "byteOffset": self.offset, "byteLength": len(data), "target": target}
        )
        self.spool.write(data)
        self.offset += len(data)
        return len(views) - 1

    def _accessor(self, view: int, count: int, kind: str, component: int, **extra: Any) -> int:
        accessors = self.json["accessors"]
        accessors.append(
            {"bufferView": view, "componentType": component, "count": count, "type": kind} | extra
        )
        return len(accessors) - 1

    def _material(self, colour: Colour) -> int:
        if (index := self.materials.get(colour)) is None:
            material: dict[str, Any] = {
                "pbrMetallicRoughness": {
                    "baseColorFactor": [colour.r, colour.g, colour.b, colour.alpha],
                    "metallicFactor": 0.0,
                    "roughnessFactor": 1.0,
                },
                "doubleSided": True,
            }
            if colour.alpha < 1.0:
                material["alphaMode"] = "BLEND"
            self.json["materials"].append(material)
            index = self.materials[colour] = len(self.json["materials"]) - 1
        return index

    def mesh(
        self,
        name: str,
        positions: np.ndarray,
        parts: Sequence[tuple[np.ndarray, Colour]],
    ) -> int | None:
        """One mesh: ``positions`` (n x 3, metres, local to its nodes) shared by ``parts``,
        each a triangle index array (m x 3) in one colour. Its index, or None when it has
        no triangles (nothing to show)."""
        parts = [(triangles, colour) for triangles, colour in parts if len(triangles)]
        if not len(positions) or not parts:
            return None
        points = np.ascontiguousarray(positions, dtype="<f4").reshape(-1, 3)
        view = self._view(points.tobytes(), ARRAY_BUFFER)
        position = self._accessor(
            view,
            len(points),
            "VEC3",
            FLOAT,
            min=[float(v) for v in points.min(axis=0)],
            max=[float(v) for v in points.max(axis=0)],
        )
        primitives = []
        for triangles, colour in parts:
            indices = np.ascontiguousarray(triangles, dtype="<u4").ravel()
            view = self._view(indices.tobytes(), ELEMENT_ARRAY_BUFFER)
            primitives.append(
                {
                    "attributes": {"POSITION": position},
                    "indices": self._accessor(view, len(indices), "SCALAR", UINT),
                    "material": self._material(colour),
                    "mode": TRIANGLES,
                }
            )
        meshes = self.json["meshes"]
        meshes.append({"name": name, "primitives": primitives})
        return len(meshes) - 1

    def node(self, name: str, mesh: int, matrix: Sequence[float] = IDENTITY) -> None:
        """An element: ``mesh`` placed by ``matrix`` (4 x 4, column-major, metres)."""
        node: dict[str, Any] = {"name": name, "mesh": mesh}
        if tuple(matrix) != IDENTITY:
            node["matrix"] = [float(v) for v in matrix]
        nodes = self.json["nodes"]
        nodes.append(node)
        nodes[0]["children"].append(len(nodes) - 1)

    def finish(self, target: Path) -> Written:
        """Write the GLB to ``target``."""
        doc = self.json
        if self.offset:
            doc["buffers"] = [{"byteLength": self.offset}]
        else:  # glTF allows no empty arrays: a model without shapes is one empty node
            for key in ("meshes", "materials", "accessors", "bufferViews"):
                del doc[key]
            del doc["nodes"][0]["children"]
        text = orjson.dumps(doc)
        text += b" " * (-len(text) % 4)
        binary = 8 + self.offset if self.offset else 0
        total = 12 + 8 + len(text) + binary
        with target.open("wb") as out:
            out.write(struct.pack("<III", MAGIC, 2, total))
            out.write(struct.pack("<II", len(text), JSON_CHUNK))
            out.write(text)
            if self.offset:
                out.write(struct.pack("<II", self.offset, BIN_CHUNK))
                self.spool.seek(0)
                shutil.copyfileobj(self.spool, out)
        return Written(target, total)


def read_glb(data: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON and binary chunks of a GLB (for tests and tools); ValueError if it is not
    one."""
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != MAGIC or version != 2 or length != len(data):
        raise ValueError("not a glTF 2.0 binary file")
    size, kind = struct.unpack_from("<II", data, 12)
    if kind != JSON_CHUNK:
        raise ValueError("the first chunk is not JSON")
    doc = orjson.loads(data[20 : 20 + size])
    binary = b""
    rest = 20 + size
    if rest < len(data):
        size, kind = struct.unpack_from("<II", data, rest)
        if kind != BIN_CHUNK:
            raise ValueError("the second chunk is not binary")
        binary = data[rest + 8 : rest + 8 + size]
    return doc, binary
