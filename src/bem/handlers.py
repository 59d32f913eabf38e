"""Job kinds and the functions that run them, and the loops that run beside them: part of
the composition root, beside ``app.py`` and ``cli.py``, the only places that know every
domain. ``jobs/`` runs whatever it is handed, so it knows no domain that defines jobs (as
polar registers each domain's tasks from the app)."""

from __future__ import annotations

import functools

from bem.geometry.service import after_import
from bem.geometry.tasks import run_geometry
from bem.ingest.tasks import run_import
from bem.jobs.service import Handler, LoopFactory
from bem.ops.runner import BackupRunner

HANDLERS: dict[str, Handler] = {
    "import": functools.partial(run_import, then=after_import),  # then the version's geometry
    "geometry": run_geometry,
}
# Started by whichever process runs jobs (bem worker, or the API with the embedded queue).
LOOPS: list[LoopFactory] = [BackupRunner]
