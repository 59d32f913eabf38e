"""Job kinds and the functions that run them: part of the composition root, beside
``app.py`` and ``cli.py``, the only places that know every domain. ``jobs/`` runs whatever
it is handed, so it knows no domain that defines jobs (as polar registers each domain's
tasks from the app)."""

from __future__ import annotations

from bem.ingest.tasks import run_import
from bem.jobs.service import Handler

HANDLERS: dict[str, Handler] = {"import": run_import}
