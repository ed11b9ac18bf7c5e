import pytest
from pydantic import ValidationError

from services.sender.settings import SenderSettings
from shared.crypto import SecretBox


def test_development_accepts_the_published_defaults(monkeypatch):
    monkeypatch.delenv("HERALD_ENVIRONMENT", raising=False)
    assert SenderSettings().environment == "development"


def test_production_refuses_default_secrets_and_names_them(monkeypatch):
    monkeypatch.setenv("HERALD_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="HERALD_ENCRYPTION_KEYS, HERALD_SECRET_KEY"):
        SenderSettings()


def test_production_starts_with_real_secrets(monkeypatch):
    monkeypatch.setenv("HERALD_ENVIRONMENT", "production")
    monkeypatch.setenv("HERALD_ENCRYPTION_KEYS", SecretBox.generate_key())
    monkeypatch.setenv("HERALD_SECRET_KEY", "a-real-secret-from-the-vault")
    assert SenderSettings().environment == "production"


def test_service_prefix_overrides_the_common_prefix(monkeypatch):
    monkeypatch.setenv("HERALD_DATABASE_URL", "postgresql+asyncpg://common/db")
    monkeypatch.setenv("HERALD_PORT", "9999")
    assert SenderSettings().database_url == "postgresql+asyncpg://common/db"
    monkeypatch.setenv("SENDER_DATABASE_URL", "postgresql+asyncpg://sender-only/db")
    monkeypatch.setenv("SENDER_PORT", "9004")
    settings = SenderSettings()
    assert settings.database_url == "postgresql+asyncpg://sender-only/db"
    assert settings.port == 9004
