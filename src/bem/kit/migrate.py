"""Alembic, driven from code: ``bem migrate`` and the tests use these, not alembic.ini."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from bem.config import Settings

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["settings"] = settings
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: Settings, revision: str) -> None:
    command.downgrade(alembic_config(settings), revision)


def heads(settings: Settings) -> tuple[str, ...]:
    return tuple(ScriptDirectory.from_config(alembic_config(settings)).get_heads())
