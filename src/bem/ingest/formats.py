"""What an uploaded file is: its format from the extension, confirmed by its first bytes.

The checks that need only the file's head (and, for ``.ifczip``, the archive's directory) run
in the upload endpoint, so a wrong file is refused before a job exists; everything else is
found by the importer and fails the job with the same kind of message.
"""

from __future__ import annotations

import re
import zipfile
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import IO

from bem.kit.errors import PayloadTooLarge, Problem, UnsupportedMediaType

HEAD_BYTES = 4096
# A real IFC compresses 5-20x; a ratio far beyond that is a decompression bomb.
MAX_ZIP_RATIO = 200


class Format(StrEnum):
    ifc = "ifc"
    ifczip = "ifczip"
    dxf = "dxf"
    ndjson = "ndjson"
    json = "json"


EXTENSIONS = {
    ".ifc": Format.ifc,
    ".ifczip": Format.ifczip,
    ".dxf": Format.dxf,
    ".ndjson": Format.ndjson,
    ".jsonl": Format.ndjson,
    ".json": Format.json,
}


class BadSource(Problem):
    """The file cannot become a version. Raised up front (a 4xx) or by the importer (the
    job fails with the same ``slug`` and message)."""

    status, slug = 422, "bad-source"


_DXF_TEXT = re.compile(rb"^\s*(0\s*\r?\n\s*SECTION|999\s*\r?\n)")
_DXF_BINARY = b"AutoCAD Binary DXF\r\n\x1a\x00"


def _looks_like(fmt: Format, head: bytes) -> bool:
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    if fmt is Format.ifc:
        return text.startswith(b"ISO-10303-21;")
    if fmt is Format.ifczip:
        return head.startswith(b"PK\x03\x04")
    if fmt is Format.dxf:
        return head.startswith(_DXF_BINARY) or _DXF_TEXT.match(head) is not None
    if fmt is Format.ndjson:
        return text.startswith(b"{")
    return text.startswith((b"[", b"{"))


def detect(filename: str, head: bytes) -> Format:
    """The format named by ``filename``'s extension, if the first bytes agree."""
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    fmt = EXTENSIONS.get(suffix)
    if fmt is None:
        raise UnsupportedMediaType(
            f"Cannot import {suffix or 'files without an extension'}; "
            f"send one of {', '.join(EXTENSIONS)}.",
            slug="unsupported-format",
            accepted=list(EXTENSIONS),
        )
    if not head.strip():
        raise BadSource("The file is empty.", slug="empty-file")
    if not _looks_like(fmt, head):
        raise UnsupportedMediaType(
            f"The file is named {suffix} but its content is not {fmt.value.upper()}.",
            slug="content-mismatch",
        )
    return fmt


def ifc_member(archive_file: Path | IO[bytes], max_bytes: int) -> zipfile.ZipInfo:
    """The one ``.ifc`` inside an ``.ifczip``, refused if the archive looks like a bomb."""
    try:
        with zipfile.ZipFile(archive_file) as archive:
            members = [
                i
                for i in archive.infolist()
                if not i.is_dir() and i.filename.lower().endswith(".ifc")
            ]
    except (zipfile.BadZipFile, OSError) as exc:
        raise BadSource(f"The .ifczip is not a readable ZIP archive ({exc}).") from exc
    if len(members) != 1:
        raise BadSource(
            f"An .ifczip must hold exactly one .ifc file; this one holds {len(members)}."
        )
    info = members[0]
    if info.file_size > max_bytes:
        raise PayloadTooLarge(
            f"The .ifc inside the archive is {info.file_size} bytes; the limit is {max_bytes}.",
            limit=max_bytes,
        )
    if info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1):
        raise BadSource(
            f"The archive expands {info.file_size // max(info.compress_size, 1)}x; "
            f"more than {MAX_ZIP_RATIO}x is refused as a decompression bomb.",
            slug="archive-bomb",
        )
    return info


def extract_ifc(path: Path, target: Path, max_bytes: int) -> None:
    """Unpack the archive's ``.ifc`` to ``target``, counting bytes as they come out (the
    sizes in a ZIP directory are claims, not facts)."""
    info = ifc_member(path, max_bytes)
    written = 0
    bound = min(max_bytes, MAX_ZIP_RATIO * max(info.compress_size, 1))
    try:
        with zipfile.ZipFile(path) as archive, archive.open(info) as src, target.open("wb") as out:
            while chunk := src.read(1024 * 1024):
                written += len(chunk)
                if written > bound:
                    raise BadSource(
                        "The archive expands beyond its declared size or the limit; refused "
                        "as a decompression bomb.",
                        slug="archive-bomb",
                    )
                out.write(chunk)
    except (zipfile.BadZipFile, EOFError, NotImplementedError, RuntimeError) as exc:
        # damaged data, an unsupported compression method, an encrypted member
        raise BadSource(f"The .ifczip cannot be unpacked ({exc}).", slug="malformed-file") from exc
