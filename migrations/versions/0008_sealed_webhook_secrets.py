"""Webhook signing secrets are sealed at rest (Fernet, a key derived from the server secret),
as TOTP secrets are: a database dump or backup alone no longer lets anyone forge deliveries.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import context, op

from bem.config import Settings, load_settings

# The box deliveries open secrets with; if it ever changes, a new migration must re-seal.
from bem.events.service import webhook_box

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

webhooks = sa.table("webhooks", sa.column("id", sa.Uuid()), sa.column("secret", sa.Text()))


def _settings() -> Settings:
    settings = context.config.attributes.get("settings")
    return settings if isinstance(settings, Settings) else load_settings()


def _rewrite(change: Callable[[str], str]) -> None:
    bind = op.get_bind()
    for row_id, secret in bind.execute(sa.select(webhooks.c.id, webhooks.c.secret)).all():
        bind.execute(webhooks.update().where(webhooks.c.id == row_id).values(secret=change(secret)))


def upgrade() -> None:
    with op.batch_alter_table("webhooks") as batch:
        batch.alter_column("secret", type_=sa.Text(), existing_type=sa.String(length=64))
    _rewrite(webhook_box(_settings()).seal)


def downgrade() -> None:
    box = webhook_box(_settings())

    def opened(sealed: str) -> str:
        plain = box.open(sealed)
        if plain is None:
            raise RuntimeError("a webhook secret does not open with this BEM_SECRET_KEY")
        return plain

    _rewrite(opened)
    with op.batch_alter_table("webhooks") as batch:
        batch.alter_column("secret", type_=sa.String(length=64), existing_type=sa.Text())
