"""Takeoff facts: narrow per-payload rows for aggregation, backfilled from stored payloads.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# The function uploads use, so backfilled facts equal those written since. If facts_of ever
# changes meaning, a new migration must recompute the table (0009 does).
from bem.versions.facts import facts_of

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BATCH = 2000


def upgrade() -> None:
    facts = op.create_table(
        "element_facts",
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("ifc_class", sa.String(length=64), nullable=False),
        sa.Column("type_name", sa.Text(), nullable=True),
        sa.Column("container_gid", sa.String(length=22), nullable=True),
        sa.Column("storey", sa.Text(), nullable=True),
        sa.Column("parent_storey", sa.Text(), nullable=True),
        sa.Column("materials", JSON, nullable=False),
        sa.Column("measures", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["hash"],
            ["element_payloads.hash"],
            name=op.f("fk_element_facts_hash_element_payloads"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_element_facts")),
    )
    # Backfill in keyset batches, so a large database is never read into memory at once.
    payloads = sa.table("element_payloads", sa.column("hash", sa.String), sa.column("doc", JSON))
    bind, after = op.get_bind(), ""
    while True:
        rows = bind.execute(
            sa.select(payloads.c.hash, payloads.c.doc)
            .where(payloads.c.hash > after)
            .order_by(payloads.c.hash)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        # Only this revision's columns: later ones add columns and fill them themselves.
        names = [column.name for column in facts.columns]
        rows_of = [facts_of(h, doc) for h, doc in rows]
        bind.execute(sa.insert(facts), [{k: r[k] for k in names} for r in rows_of])
        after = rows[-1][0]


def downgrade() -> None:
    op.drop_table("element_facts")
