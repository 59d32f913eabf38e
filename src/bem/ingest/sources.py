"""An imported file opened as one stream of ``(where, element document)`` pairs.

Runs in a worker thread: IfcOpenShell and ezdxf are synchronous. The format was detected at
upload; everything that needs the whole file (parse errors, truncation, schema, archive
contents) is found here and raised as :class:`BadSource`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bem.config import Settings
from bem.ingest import ifc
from bem.ingest.formats import BadSource, Format, extract_ifc
from bem.kit.errors import PayloadTooLarge
from bem.kit.ndjson import iter_json, iter_ndjson_file

Documents = Iterator[tuple[str, dict[str, Any]]]


@dataclass
class Opened:
    documents: Documents
    total: int | None  # elements, when known before reading them all
    schema: str | None = None
    units: dict[str, Any] | None = None


def _ifc(path: Path, settings: Settings) -> Opened:
    model = ifc.open_model(path)
    ctx = ifc.ModelContext.of(model, geometry=settings.import_geometry)
    total = len(model.by_type("IfcProduct"))

    def documents() -> Documents:
        # Entities die with their file object: the generator keeps ``model`` alive.
        for e in model.by_type("IfcProduct"):
            where = f"{e.is_a()} #{e.id()}"
            try:
                doc = ifc.element_document(e, ctx)
            except (RuntimeError, AttributeError, TypeError, ValueError, IndexError) as exc:
                # IfcOpenShell parses leniently; broken entities surface here. Re-running the
                # job would fail the same way, so this is bad input, not a retry.
                raise BadSource(
                    f"{where}: the element cannot be read ({type(exc).__name__}: {exc})",
                    slug="malformed-file",
                ) from exc
            yield f"{where} ({e.GlobalId})", doc

    return Opened(documents(), total, str(model.schema_identifier), ctx.units.declared)


def _dxf(path: Path, settings: Settings) -> Opened:
    from bem.ingest import dxf  # ezdxf costs ~35 MiB; only DXF imports load it

    drawing = dxf.open_drawing(path)
    _, declared = dxf.drawing_units(drawing)
    layers = dxf.LayerMap(settings.dxf_layer_map, settings.dxf_default_class)
    documents = (
        (f"DXF {d['object_type']} {d['tag'] or d['global_id']}", d)
        for d in dxf.element_documents(drawing, layers)
    )
    return Opened(documents, None, str(drawing.dxfversion), declared)


def _ndjson(path: Path, settings: Settings) -> Opened:
    def documents() -> Documents:
        with path.open("rb") as file:
            yield from iter_ndjson_file(file, max_line_bytes=settings.max_line_bytes)

    return Opened(documents(), None)


def _json(path: Path, settings: Settings) -> Opened:
    if path.stat().st_size > settings.max_json_body_bytes:
        raise PayloadTooLarge(
            f"A JSON import may be at most {settings.max_json_body_bytes} bytes; "
            "send large models as NDJSON.",
            limit=settings.max_json_body_bytes,
        )
    return Opened(iter_json(path.read_bytes()), None)


def open_source(path: Path, fmt: Format, workdir: Path, settings: Settings) -> Opened:
    if not path.is_file():
        raise BadSource("The stored file is missing.", slug="source-missing")
    if fmt is Format.ifczip:
        unpacked = workdir / "model.ifc"
        extract_ifc(path, unpacked, settings.max_import_bytes)
        return _ifc(unpacked, settings)
    if fmt is Format.ifc:
        return _ifc(path, settings)
    if fmt is Format.dxf:
        return _dxf(path, settings)
    if fmt is Format.ndjson:
        return _ndjson(path, settings)
    return _json(path, settings)
