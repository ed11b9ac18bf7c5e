"""The pure rules behind webhook sources and keyword lists (``services/ingest/domain.py``)."""

from __future__ import annotations

import pytest

from services.ingest.domain import KeywordClash, SourceRejected, check_source_secrets, keyword_lists


@pytest.mark.parametrize(
    ("provider", "secrets", "says"),
    [
        ("meta", {"app_secret": "x"}, "needs secrets: verify_token"),
        ("chatwoot", {"webhook_secret": "x", "hmac_key": "y"}, "unknown secrets for chatwoot: hmac_key"),
        ("waha", {"hmac_key": ""}, "needs secrets: hmac_key"),
        ("evolution", {"api_key": "x"}, "header_value"),
    ],
)
def test_a_source_without_what_its_provider_needs_is_refused_with_what_to_add(
    provider: str, secrets: dict[str, str], says: str
) -> None:
    with pytest.raises(SourceRejected, match=says):
        check_source_secrets(provider, secrets)


@pytest.mark.parametrize(
    ("provider", "secrets"),
    [
        ("meta", {"app_secret": "a", "verify_token": "v", "graph_url": "http://g"}),
        ("chatwoot", {"webhook_secret": "s"}),
        ("evolution", {"jwt_key": "k"}),
        ("evolution", {"header_name": "x-key", "header_value": "v"}),
    ],
)
def test_a_complete_source_passes(provider: str, secrets: dict[str, str]) -> None:
    check_source_secrets(provider, secrets)


def test_keyword_lists_are_trimmed_upper_case_and_drop_what_is_no_word() -> None:
    assert keyword_lists([" stop ", "!!", "Basta"], ["voltar"]) == (["STOP", "BASTA"], ["VOLTAR"])


def test_a_keyword_in_both_lists_is_refused() -> None:
    with pytest.raises(KeywordClash, match="opt out and opt in: stop"):
        keyword_lists(["Stop"], ["stop!"])
