"""Original files, kept by content (their SHA-256) in a local directory or an S3 bucket.

``open_store(settings)`` picks one: ``BEM_STORAGE_URL=s3://bucket/prefix`` (``kit/s3.py``,
so API processes and workers on different hosts share the files) or ``BEM_STORAGE_DIR``, the
embedded default. Keys are ``<sha256[:2]>/<sha256>`` in both. Everything here is blocking:
run it in a thread from async code.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

from starlette.responses import FileResponse, Response

if TYPE_CHECKING:
    from bem.config import Settings

KEY = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1024 * 1024
INCOMING = ".incoming-"
# A half-written file older than this belongs to a process that died (kill -9, OOM): no
# upload spends an hour copying into the store.
ABANDONED_AFTER_S = 3600.0


class CorruptSource(Exception):
    """A stored file whose bytes no longer hash to its key."""


def check_key(key: str) -> str:
    if not KEY.fullmatch(key):
        raise ValueError(f"not a storage key: {key!r}")
    return key


def name_of(key: str) -> str:
    """The key's place in a store: ``<sha256[:2]>/<sha256>``."""
    return f"{check_key(key)[:2]}/{key}"


def digest_of(source: IO[bytes]) -> tuple[str, int]:
    """SHA-256 and size of a binary file, read from its start."""
    digest, size = hashlib.sha256(), 0
    source.seek(0)
    while chunk := source.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


class SourceStore(Protocol):
    def put(self, source: IO[bytes]) -> tuple[str, int]:
        """Keep a binary file (read from its start); its key (SHA-256) and size."""

    def exists(self, key: str) -> bool: ...

    def local_file(self, key: str, workdir: Path) -> Path:
        """A local file with the key's content (a verified copy in ``workdir`` if need be)."""

    def download(self, key: str, target: Path) -> None:
        """Write the key's content to ``target``, verified against the key."""

    def stored_keys(self) -> Iterator[str]: ...

    def response(
        self,
        key: str,
        filename: str,
        media_type: str,
        headers: Mapping[str, str],
        byte_range: str | None = None,
    ) -> Response:
        """The key's content as a download; ``byte_range`` (a request's ``Range``) asks for
        one part of it (206)."""

    def sweep(self, older_than_s: float = ABANDONED_AFTER_S) -> int:
        """Delete what crashed writers left half-done (older than ``older_than_s``); how many."""


class LocalStore:
    """A directory (a shared volume when API and workers run on several hosts). Writes go to
    a temporary name first and are renamed into place, so a reader never sees half a file
    and two uploads of the same bytes store it once."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / name_of(key)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def put(self, source: IO[bytes]) -> tuple[str, int]:
        digest = hashlib.sha256()
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=INCOMING)
        tmp = Path(tmp_name)
        size = 0
        try:
            source.seek(0)
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            key = digest.hexdigest()
            final = self.path(key)
            final.parent.mkdir(exist_ok=True)
            tmp.replace(final)
        finally:
            tmp.unlink(missing_ok=True)
        return key, size

    def local_file(self, key: str, workdir: Path) -> Path:
        return self.path(key)

    def download(self, key: str, target: Path) -> None:
        shutil.copy2(self.path(key), target)

    def stored_keys(self) -> Iterator[str]:
        for path in sorted(self.root.glob("??/*")):
            if KEY.fullmatch(path.name) and path.parent.name == path.name[:2]:
                yield path.name

    def response(
        self,
        key: str,
        filename: str,
        media_type: str,
        headers: Mapping[str, str],
        byte_range: str | None = None,
    ) -> Response:
        # FileResponse reads the request's Range (and If-Range) itself.
        return FileResponse(
            self.path(key), filename=filename, media_type=media_type, headers=dict(headers)
        )

    def sweep(self, older_than_s: float = ABANDONED_AFTER_S) -> int:
        """Half-written files; recent ones may be another process's upload in flight."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        stale = [p for p in self.root.glob(INCOMING + "*") if p.stat().st_mtime < cutoff]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)


def open_store(settings: Settings) -> SourceStore:
    if settings.storage_url is not None:
        from bem.kit.s3 import S3Store  # boto3 is imported only when it is used

        return S3Store(settings.storage_url)
    return LocalStore(settings.storage_dir)
