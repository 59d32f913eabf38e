"""DXF -> element documents (ezdxf): modelspace entities and block references.

Each entity becomes an element whose class comes from a layer map (glob patterns, first
match wins; default ``IfcBuildingElementProxy``). Block references carry their attributes as
properties, and the entities inside a block become elements whose ``parent`` is the reference,
recursively (INSERT nesting as decomposition). GlobalIds are derived from DXF handles, which
CAD programs keep across saves, so two versions of a drawing diff element by element.
Bounding boxes are converted to metres using ``$INSUNITS``.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import ezdxf.bbox
import ezdxf.units
import ifcopenshell.guid
from ezdxf.document import Drawing
from ezdxf.entities.dxfgfx import DXFGraphic
from ezdxf.entities.insert import Insert
from ezdxf.enums import InsertUnits
from ezdxf.filemanagement import readfile
from ezdxf.lldxf.const import DXFError

from bem.ingest.formats import BadSource

DEFAULT_CLASS = "IfcBuildingElementProxy"
MAX_NESTING = 8
# Stable GlobalIds: uuid5 of the handle path under a fixed namespace.
NAMESPACE = uuid.UUID("5f1c4d0e-7a52-4b8e-9d1a-3c6e0d0f0000")


@dataclass
class LayerMap:
    """``{"A-WALL*": "IfcWall", ...}``: matched case-insensitively, in order."""

    patterns: dict[str, str] = field(default_factory=dict)
    default: str = DEFAULT_CLASS

    def ifc_class(self, layer: str) -> str:
        name = layer.upper()
        for pattern, ifc_class in self.patterns.items():
            if fnmatchcase(name, pattern.upper()):
                return ifc_class
        return self.default


# What ezdxf raises on damaged input: a truncated file (StopIteration), garbage in a binary
# DXF (struct.error, ValueError "subsection not found", IndexError), bad text encodings.
UNREADABLE = (
    DXFError,
    OSError,
    UnicodeDecodeError,
    StopIteration,
    ValueError,
    struct.error,
    IndexError,
    KeyError,
    EOFError,
)


def open_drawing(path: Path) -> Drawing:
    try:
        return readfile(path)
    except UNREADABLE as exc:
        raise BadSource(f"ezdxf cannot read the drawing: {exc}", slug="malformed-file") from exc


def drawing_units(drawing: Drawing) -> tuple[float, dict[str, Any]]:
    """The factor from drawing units to metres, and the units as declared."""
    code = int(drawing.header.get("$INSUNITS", 0))
    if code == 0:
        return 1.0, {"length": {"unit": None, "to_si": 1.0}}
    factor = ezdxf.units.conversion_factor(InsertUnits(code), InsertUnits.Meters)
    return factor, {"length": {"unit": ezdxf.units.unit_name(code), "to_si": factor}}


def global_id(key: str) -> str:
    return str(ifcopenshell.guid.compress(uuid.uuid5(NAMESPACE, key).hex))


def _bbox(entity: DXFGraphic, factor: float) -> list[list[float]] | None:
    box = ezdxf.bbox.extents([entity], fast=True)
    if not box.has_data:
        return None
    return [[c * factor for c in box.extmin], [c * factor for c in box.extmax]]


def _document(
    entity: DXFGraphic, key: str, layers: LayerMap, factor: float, parent: str | None
) -> dict[str, Any]:
    kind = entity.dxftype()
    properties: dict[str, dict[str, Any]] = {
        "DXF": {
            "EntityType": kind,
            "Layer": entity.dxf.layer,
            "Color": entity.dxf.color,
            "Linetype": entity.dxf.linetype,
            "Handle": entity.dxf.handle,
        }
    }
    name = None
    if isinstance(entity, Insert):
        name = entity.dxf.name
        attributes = {a.dxf.tag: a.dxf.text for a in entity.attribs}
        if attributes:
            properties["Attributes"] = attributes
    box = _bbox(entity, factor)
    return {
        "global_id": global_id(key),
        "ifc_class": layers.ifc_class(entity.dxf.layer),
        "name": name,
        "object_type": kind,
        "tag": entity.dxf.handle,
        "parent": parent,
        "properties": properties,
        "geometry": {"bbox": box} if box is not None else None,
    }


def _walk(
    entity: DXFGraphic, key: str, layers: LayerMap, factor: float, parent: str | None, depth: int
) -> Iterator[dict[str, Any]]:
    doc = _document(entity, key, layers, factor, parent)
    yield doc
    if isinstance(entity, Insert) and depth < MAX_NESTING:
        for index, child in enumerate(entity.virtual_entities()):
            yield from _walk(child, f"{key}/{index}", layers, factor, doc["global_id"], depth + 1)


def element_documents(drawing: Drawing, layers: LayerMap) -> Iterator[dict[str, Any]]:
    factor, _ = drawing_units(drawing)
    for entity in drawing.modelspace():
        yield from _walk(entity, str(entity.dxf.handle), layers, factor, None, 0)


def count_top_level(drawing: Drawing) -> int:
    return len(drawing.modelspace())
