"""Index element payloads by name, so selectors that ask for one name need not scan a version.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_element_payloads_name"), "element_payloads", ["name"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_element_payloads_name"), table_name="element_payloads")
