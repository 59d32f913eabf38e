"""Backups as requests with a state: asked for by an admin (``POST /v1/admin/backups``) or by
the schedule, run by a worker, and verified (the sealed archive reopened, or a drill's
restore); a completed row is what it was before.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FILLED = ("finished_at", "location", "bytes", "tables", "rows")
TYPES = {
    "finished_at": sa.DateTime(timezone=True),
    "location": sa.Text(),
    "bytes": sa.BigInteger(),
    "tables": sa.Integer(),
    "rows": sa.BigInteger(),
}


def upgrade() -> None:
    with op.batch_alter_table("backups") as batch:
        batch.add_column(
            sa.Column("status", sa.String(16), nullable=False, server_default="succeeded")
        )
        batch.add_column(sa.Column("origin", sa.String(16), nullable=False, server_default="cli"))
        batch.add_column(sa.Column("requested_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("requested_by", sa.Uuid(), nullable=True))
        batch.add_column(sa.Column("started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("verification", sa.String(16), nullable=False, server_default="unverified")
        )
        batch.add_column(sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True))
        for name in FILLED:
            batch.alter_column(name, existing_type=TYPES[name], nullable=True)
        batch.create_foreign_key(
            op.f("fk_backups_requested_by_users"),
            "users",
            ["requested_by"],
            ["id"],
            ondelete="SET NULL",
        )
        batch.create_check_constraint(
            op.f("ck_backups_status"),
            "status IN ('requested', 'running', 'succeeded', 'failed')",
        )
    op.execute("UPDATE backups SET requested_at = finished_at")
    with op.batch_alter_table("backups") as batch:
        batch.alter_column("requested_at", existing_type=TYPES["finished_at"], nullable=False)
    op.create_index(op.f("ix_backups_status"), "backups", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_backups_status"), table_name="backups")
    op.execute("DELETE FROM backups WHERE status <> 'succeeded'")
    with op.batch_alter_table("backups") as batch:
        batch.drop_constraint(op.f("ck_backups_status"), type_="check")
        batch.drop_constraint(op.f("fk_backups_requested_by_users"), type_="foreignkey")
        for name in FILLED:
            batch.alter_column(name, existing_type=TYPES[name], nullable=False)
        for name in (
            "verified_at",
            "verification",
            "error",
            "started_at",
            "requested_by",
            "requested_at",
            "origin",
            "status",
        ):
            batch.drop_column(name)
