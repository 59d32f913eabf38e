"""Settings: validation at start, production rules, secrets from files, no secrets in reprs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from bem.config import DEV_SECRET_KEY, Settings, describe_errors, load_settings

BEM = [sys.executable, "-m", "bem"]


def run_bem(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BEM_")}
    return subprocess.run(
        [*BEM, *args], env={**clean, **env}, cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_invalid_config_exits_non_zero_naming_the_field(tmp_path: Path) -> None:
    r = run_bem(["migrate"], {"BEM_DB_POOL_SIZE": "lots"}, tmp_path)
    assert r.returncode == 2
    assert "BEM_DB_POOL_SIZE" in r.stderr
    assert "lots" not in r.stderr  # the value is not echoed: it might be a secret


def test_production_refuses_default_secret(tmp_path: Path) -> None:
    r = run_bem(["migrate"], {"BEM_PROFILE": "production"}, tmp_path)
    assert r.returncode == 2
    assert "secret_key" in r.stderr
    with pytest.raises(ValidationError):
        Settings(profile="production", secret_key="too-short-but-16+")
    ok = Settings(profile="production", secret_key="x" * 40, mail_backend="smtp")
    assert ok.profile == "production"
    with pytest.raises(ValidationError, match="mail_backend"):
        Settings(profile="production", secret_key="x" * 40, mail_backend="console")


def test_secrets_come_from_a_secrets_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "bem_secret_key").write_text("s" * 48)
    monkeypatch.setenv("BEM_SECRETS_DIR", str(tmp_path))
    monkeypatch.delenv("BEM_SECRET_KEY", raising=False)
    assert load_settings().secret_key.get_secret_value() == "s" * 48
    monkeypatch.setenv("BEM_SECRET_KEY", "e" * 48)  # the environment wins over files
    assert load_settings().secret_key.get_secret_value() == "e" * 48


def test_secrets_never_appear_in_reprs() -> None:
    settings = Settings(
        secret_key="a-very-secret-value-123456",
        database_url="postgresql://bem:hunter2@db:5432/bem",
        redis_url="redis://:redispass@cache:6379/0",
    )
    text = repr(settings) + str(settings) + str(settings.model_dump())
    for secret in ("a-very-secret-value-123456", "hunter2", "redispass"):
        assert secret not in text


def test_errors_are_described_per_field() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(port=0, log_level="LOUD")
    lines = describe_errors(info.value)
    assert any(line.startswith("BEM_PORT:") for line in lines)
    assert any(line.startswith("BEM_LOG_LEVEL:") for line in lines)


def test_development_allows_the_default_secret() -> None:
    assert Settings().secret_key.get_secret_value() == DEV_SECRET_KEY


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / ".env").write_text("BEM_PORT=9123\nBEM_LOG_LEVEL=DEBUG\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BEM_PORT", raising=False)
    monkeypatch.delenv("BEM_LOG_LEVEL", raising=False)
    settings = load_settings()
    assert settings.port == 9123 and settings.log_level == "DEBUG"


def test_build_commit_is_a_hash_or_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    from bem.kit.build import build_of

    monkeypatch.setenv("BEM_BUILD_COMMIT", "")  # the image's default when no commit was given
    assert build_of(Settings().build_commit).commit  # then the checkout's HEAD, or "unknown"
    monkeypatch.setenv("BEM_BUILD_COMMIT", "0123abcd4567")
    assert build_of(Settings().build_commit).commit == "0123abcd4567"
    monkeypatch.setenv("BEM_BUILD_COMMIT", "main; rm -rf /")
    with pytest.raises(ValidationError, match="build_commit"):
        Settings()
