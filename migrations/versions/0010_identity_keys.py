"""Takeoff facts gain the keys a diff re-identifies elements by when every GlobalId was
regenerated (``versions/facts.identity_keys``), computed from the stored payloads.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# The function uploads use, so backfilled keys equal those written since.
from bem.versions.facts import identity_keys

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BATCH = 2000
KEYS = ("content_key", "place_key", "name_key")


def upgrade() -> None:
    with op.batch_alter_table("element_facts") as batch:
        for key in KEYS:
            batch.add_column(sa.Column(key, sa.String(length=64), nullable=True))
    facts = sa.table("element_facts", sa.column("hash", sa.String), *map(sa.column, KEYS))
    payloads = sa.table("element_payloads", sa.column("hash", sa.String), sa.column("doc", JSON))
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
            [{"h": h, **identity_keys(doc)} for h, doc in rows],
        )
        after = rows[-1][0]


def downgrade() -> None:
    with op.batch_alter_table("element_facts") as batch:
        for key in reversed(KEYS):
            batch.drop_column(key)
