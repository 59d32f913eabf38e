"""Takeoff facts for real models, recomputed from the stored payloads:

- ``materials`` keeps each material's share of its element (``{name: share}``) instead of the
  distinct names, so a takeoff by material apportions measures instead of counting an
  element's whole volume under each of its materials;
- ``content_key``, ``place_key`` and ``name_key`` are the keys a diff finds elements again
  by when every GlobalId was regenerated.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# The functions uploads use, so recomputed facts equal those written since.
from bem.versions.facts import identity_keys, material_shares

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BATCH = 2000
KEYS = ("content_key", "place_key", "name_key")
payloads = sa.table("element_payloads", sa.column("hash", sa.String), sa.column("doc", JSON))


def _rewrite(columns: Sequence[str], values: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Set ``columns`` of every facts row from its payload's document."""
    types = {"materials": JSON, **dict.fromkeys(KEYS, sa.String())}
    facts = sa.table(
        "element_facts",
        sa.column("hash", sa.String),
        *(sa.column(name, types[name]) for name in columns),
    )
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
            [{"h": h, **values(doc)} for h, doc in rows],
        )
        after = rows[-1][0]


def upgrade() -> None:
    with op.batch_alter_table("element_facts") as batch:
        for key in KEYS:
            batch.add_column(sa.Column(key, sa.String(length=64), nullable=True))
    _rewrite(
        ("materials", *KEYS),
        lambda doc: {
            "materials": material_shares(doc.get("materials") or []),
            **identity_keys(doc),
        },
    )


def downgrade() -> None:
    _rewrite(
        ("materials",),
        lambda doc: {"materials": sorted({m["name"] for m in doc.get("materials") or []})},
    )
    with op.batch_alter_table("element_facts") as batch:
        for key in reversed(KEYS):
            batch.drop_column(key)
