"""The pipeline finds the sender (a rule's template is checked there) where a local stack puts it
when ``PIPELINE_SENDER_URL`` is not set, and every launcher sets it."""

from __future__ import annotations

from devtools.processes import pipeline_env
from herald.services import SERVICES
from services.pipeline.settings import PipelineSettings


def test_the_default_sender_url_is_the_senders_default_port() -> None:
    default = PipelineSettings.model_fields["sender_url"].default
    assert default == f"http://127.0.0.1:{SERVICES['sender'].port}"


def test_the_sender_url_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv(*next(iter(pipeline_env(9123, "herald-sender").items())))
    assert PipelineSettings().sender_url == "http://herald-sender:9123"
