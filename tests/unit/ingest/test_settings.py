"""Ingest finds the sender where a local stack puts it when ``INGEST_SENDER_URL`` is not set."""

from __future__ import annotations

from herald.services import SERVICES
from services.ingest.settings import IngestSettings


def test_the_default_sender_url_is_the_senders_default_port() -> None:
    default = IngestSettings.model_fields["sender_url"].default
    assert default == f"http://127.0.0.1:{SERVICES['sender'].port}"


def test_the_sender_url_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("INGEST_SENDER_URL", "http://herald-sender:8004")
    assert IngestSettings().sender_url == "http://herald-sender:8004"
