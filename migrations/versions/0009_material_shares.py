"""Takeoff facts keep each material's share of its element (``{name: share}``) instead of the
distinct names, so a takeoff by material apportions measures instead of counting an element's
whole volume under each of its materials. Recomputed from the stored payloads.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# The function uploads use, so recomputed shares equal those written since.
from bem.versions.facts import material_shares

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BATCH = 2000
facts = sa.table("element_facts", sa.column("hash", sa.String), sa.column("materials", JSON))
payloads = sa.table("element_payloads", sa.column("hash", sa.String), sa.column("doc", JSON))


def _rewrite(value: Callable[[list[dict[str, Any]]], Any]) -> None:
    """Set every row's ``materials`` from its payload, ``value`` choosing the form."""
    bind, after = op.get_bind(), ""
    while True:  # keyset batches: a large database is never read into memory at once
        rows = bind.execute(
            sa.select(payloads.c.hash, payloads.c.doc)
            .join(facts, facts.c.hash == payloads.c.hash)
            .where(payloads.c.hash > after)
            .order_by(payloads.c.hash)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        bind.execute(
            facts.update().where(facts.c.hash == sa.bindparam("h")),
            [{"h": h, "materials": value(doc.get("materials") or [])} for h, doc in rows],
        )
        after = rows[-1][0]


def upgrade() -> None:
    _rewrite(material_shares)


def downgrade() -> None:
    _rewrite(lambda materials: sorted({m["name"] for m in materials}))
