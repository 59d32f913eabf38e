"""Original files, kept by content: ``<root>/<sha256[:2]>/<sha256>``.

A local directory (a shared volume when API and workers run on several hosts). Writes go to a
temporary name first and are renamed into place, so a reader never sees half a file and two
uploads of the same bytes store it once.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
from pathlib import Path
from typing import IO

KEY = re.compile(r"^[0-9a-f]{64}$")
CHUNK = 1024 * 1024
INCOMING = ".incoming-"
# A half-written file older than this belongs to a process that died (kill -9, OOM): no
# upload spends an hour copying into the store.
ABANDONED_AFTER_S = 3600.0


class SourceStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        if not KEY.fullmatch(key):
            raise ValueError(f"not a storage key: {key!r}")
        return self.root / key[:2] / key

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def put(self, source: IO[bytes]) -> tuple[str, int]:
        """Copy a binary file in from its start; returns its key (SHA-256) and size."""
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

    def sweep(self, older_than_s: float = ABANDONED_AFTER_S) -> int:
        """Delete half-written files crashed processes left behind; how many. Recent ones may
        be another process's upload in flight and stay."""
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        stale = [p for p in self.root.glob(INCOMING + "*") if p.stat().st_mtime < cutoff]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)
