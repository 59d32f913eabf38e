"""Job kinds and the functions that run them, and the loops that run beside them: part of
the composition root, beside ``app.py`` and ``cli.py``, the only places that know every
domain. ``jobs/`` runs whatever it is handed, so it knows no domain that defines jobs (as
polar registers each domain's tasks from the app)."""

from __future__ import annotations

from bem.ingest.tasks import run_import
from bem.jobs.service import Handler, LoopFactory
from bem.ops.runner import BackupRunner

HANDLERS: dict[str, Handler] = {"import": run_import}
# Started by whichever process runs jobs (bem worker, or the API with the embedded queue).
LOOPS: list[LoopFactory] = [BackupRunner]
