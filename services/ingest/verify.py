"""Webhook verification, one function per provider. Pure: no I/O.

Every comparison of a secret or a signature is constant-time (``hmac.compare_digest``). A function
returns nothing when the request is authentic and raises ``Unverified`` otherwise; the caller
answers 401 and stores nothing but a count.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any


class Unverified(Exception):
    """The request could not be shown to come from the provider. ``reason`` labels the metric."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _hex_hmac(key: str, data: bytes, digest: str) -> str:
    return hmac.new(key.encode(), data, digest).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def verify_meta(app_secret: str, body: bytes, headers: Mapping[str, str]) -> None:
    """``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>``."""
    header = headers.get("x-hub-signature-256", "")
    if not header:
        raise Unverified("missing_signature", "missing X-Hub-Signature-256 header")
    scheme, _, given = header.partition("=")
    if scheme != "sha256" or not given:
        raise Unverified("bad_signature", "X-Hub-Signature-256 must be 'sha256=<hex>'")
    if not _same(given.lower(), _hex_hmac(app_secret, body, "sha256")):
        raise Unverified("bad_signature", "X-Hub-Signature-256 does not match the body and the app secret")


def verify_meta_handshake(verify_token: str, params: Mapping[str, str]) -> str:
    """Meta's GET subscription check: answers the challenge when mode and token are right."""
    if params.get("hub.mode") != "subscribe":
        raise Unverified("bad_handshake", "hub.mode must be 'subscribe'")
    if not _same(params.get("hub.verify_token", ""), verify_token):
        raise Unverified("bad_handshake", "hub.verify_token does not match this source's verify token")
    return params.get("hub.challenge", "")


def verify_chatwoot(
    secret: str, body: bytes, headers: Mapping[str, str], *, now: float, max_skew_seconds: float
) -> None:
    """``X-Chatwoot-Signature: sha256=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`` and
    ``X-Chatwoot-Timestamp`` within ``max_skew_seconds`` of now (a replay is refused)."""
    stamp = headers.get("x-chatwoot-timestamp", "")
    header = headers.get("x-chatwoot-signature", "")
    if not header or not stamp:
        raise Unverified(
            "missing_signature",
            "missing X-Chatwoot-Signature or X-Chatwoot-Timestamp: give the Chatwoot webhook a secret "
            "(Chatwoot 4.12+ signs webhooks that have one)",
        )
    try:
        sent_at = int(stamp)
    except ValueError:
        raise Unverified("bad_timestamp", "X-Chatwoot-Timestamp must be unix seconds") from None
    if abs(now - sent_at) > max_skew_seconds:
        raise Unverified(
            "stale_timestamp",
            f"X-Chatwoot-Timestamp is {int(now - sent_at)} s away from now (limit {int(max_skew_seconds)} s): "
            "a replay, or the Chatwoot server's clock is wrong",
        )
    scheme, _, given = header.partition("=")
    expected = _hex_hmac(secret, stamp.encode() + b"." + body, "sha256")
    if scheme != "sha256" or not _same(given.lower(), expected):
        raise Unverified(
            "bad_signature", "X-Chatwoot-Signature does not match the timestamp, body and secret"
        )


def verify_waha(hmac_key: str, body: bytes, headers: Mapping[str, str]) -> None:
    """``X-Webhook-Hmac: <hex HMAC-SHA512(key, raw body)>``."""
    given = headers.get("x-webhook-hmac", "")
    if not given:
        raise Unverified(
            "missing_signature", "missing X-Webhook-Hmac header: set an HMAC key on the WAHA webhook"
        )
    algorithm = headers.get("x-webhook-hmac-algorithm", "sha512").lower()
    if algorithm != "sha512":
        raise Unverified(
            "bad_signature", f"X-Webhook-Hmac-Algorithm {algorithm!r} is not supported: use sha512"
        )
    if not _same(given.lower(), _hex_hmac(hmac_key, body, "sha512")):
        raise Unverified("bad_signature", "X-Webhook-Hmac does not match the body and the HMAC key")


def _b64url(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_evolution(secrets: Mapping[str, Any], headers: Mapping[str, str], *, now: float) -> None:
    """Evolution API does not sign its webhooks. A source authenticates them one of two ways:

    - ``header_value`` (+ ``header_name``, default ``apikey``): a static header set in the
      Evolution webhook's ``headers``;
    - ``jwt_key``: Evolution's ``Authorization: Bearer <JWT HS256>`` (``headers.jwt_key`` in its
      webhook config), checked for signature and expiry.
    """
    if secrets.get("jwt_key"):
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or token.count(".") != 2:
            raise Unverified("missing_signature", "missing 'Authorization: Bearer <JWT>' from Evolution")
        head, payload, signature = token.split(".")
        expected = hmac.new(
            str(secrets["jwt_key"]).encode(), f"{head}.{payload}".encode(), hashlib.sha256
        ).digest()
        try:
            given = _b64url(signature)
            header = json.loads(_b64url(head))
            claims = json.loads(_b64url(payload))
        except (ValueError, TypeError):
            raise Unverified("bad_signature", "the Evolution JWT is malformed") from None
        if (
            not isinstance(header, dict)
            or header.get("alg") != "HS256"
            or not hmac.compare_digest(given, expected)
        ):
            raise Unverified("bad_signature", "the Evolution JWT does not verify with this source's jwt_key")
        exp = claims.get("exp") if isinstance(claims, dict) else None
        if not isinstance(exp, (int, float)) or exp < now:
            raise Unverified("stale_timestamp", "the Evolution JWT has expired (or has no exp)")
        return
    name = str(secrets.get("header_name") or "apikey").lower()
    given = headers.get(name, "")
    if not given:
        raise Unverified(
            "missing_signature", f"missing {name} header: add it to the Evolution webhook's headers"
        )
    if not _same(given, str(secrets.get("header_value", ""))):
        raise Unverified("bad_signature", f"the {name} header does not match this source's secret")
