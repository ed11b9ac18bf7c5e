"""Webhook verification and keyword matching (pure functions)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from services.ingest.normalise import DEFAULT_KEYWORDS, keyword_form
from services.ingest.verify import Unverified, verify_chatwoot, verify_evolution, verify_meta, verify_waha

BODY = b'{"x": "\\u00e9"}'


def _hex(key: str, data: bytes, digest: str) -> str:
    return hmac.new(key.encode(), data, digest).hexdigest()


def test_meta_signature_is_over_the_raw_bytes():
    verify_meta("s", BODY, {"x-hub-signature-256": "sha256=" + _hex("s", BODY, "sha256")})
    reencoded = json.dumps(json.loads(BODY), ensure_ascii=False).encode()
    with pytest.raises(Unverified):
        verify_meta("s", reencoded, {"x-hub-signature-256": "sha256=" + _hex("s", BODY, "sha256")})
    with pytest.raises(Unverified, match="missing"):
        verify_meta("s", BODY, {})


def test_chatwoot_signs_timestamp_dot_body_and_refuses_replays():
    now = time.time()
    stamp = str(int(now))
    headers = {
        "x-chatwoot-timestamp": stamp,
        "x-chatwoot-signature": "sha256=" + _hex("k", f"{stamp}.".encode() + BODY, "sha256"),
    }
    verify_chatwoot("k", BODY, headers, now=now, max_skew_seconds=300)
    with pytest.raises(Unverified) as stale:
        verify_chatwoot("k", BODY, headers, now=now + 301, max_skew_seconds=300)
    assert stale.value.reason == "stale_timestamp"
    with pytest.raises(Unverified):
        verify_chatwoot("k", BODY + b" ", headers, now=now, max_skew_seconds=300)


def test_waha_hmac_is_sha512():
    verify_waha("k", BODY, {"x-webhook-hmac": _hex("k", BODY, "sha512")})
    with pytest.raises(Unverified):
        verify_waha("k", BODY, {"x-webhook-hmac": _hex("k", BODY, "sha256")})


def _jwt(key: str, claims: dict) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    signature = b64(hmac.new(key.encode(), f"{head}.{payload}".encode(), hashlib.sha256).digest())
    return f"{head}.{payload}.{signature}"


def test_evolution_static_header_or_jwt():
    verify_evolution({"header_value": "abc"}, {"apikey": "abc"}, now=0)
    verify_evolution({"header_name": "X-Token", "header_value": "abc"}, {"x-token": "abc"}, now=0)
    with pytest.raises(Unverified):
        verify_evolution({"header_value": "abc"}, {"apikey": "abd"}, now=0)
    now = time.time()
    token = _jwt("secret", {"iat": int(now), "exp": int(now) + 600, "app": "evolution", "action": "webhook"})
    verify_evolution({"jwt_key": "secret"}, {"authorization": f"Bearer {token}"}, now=now)
    with pytest.raises(Unverified, match="expired"):
        verify_evolution({"jwt_key": "secret"}, {"authorization": f"Bearer {token}"}, now=now + 601)
    with pytest.raises(Unverified):
        verify_evolution({"jwt_key": "other"}, {"authorization": f"Bearer {token}"}, now=now)


@pytest.mark.parametrize(
    ("text", "opts_out"),
    [("STOP", True), ("stop!", True), (" Parar. ", True), ("please stop", False), ("stopp", False)],
)
def test_a_message_opts_out_only_when_it_is_the_keyword(text: str, opts_out: bool):
    assert (keyword_form(text) in DEFAULT_KEYWORDS.opt_out) is opts_out
