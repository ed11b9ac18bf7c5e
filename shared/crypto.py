"""Secrets and phone numbers at rest.

``SecretBox`` wraps MultiFernet: the first key encrypts, every key decrypts, so a key is rotated by
putting the new key first and running ``rotate`` over stored values. ``lookup_hash`` is a keyed
HMAC, so a phone number can be found by equality without being stored in clear.
"""

from __future__ import annotations

import hashlib
import hmac

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class DecryptionError(Exception):
    """A stored value could not be decrypted with any configured key."""


class SecretBox:
    def __init__(self, keys: str | list[str]) -> None:
        if isinstance(keys, str):
            keys = [k.strip() for k in keys.split(",") if k.strip()]
        if not keys:
            raise ValueError("at least one Fernet key is required (HERALD_ENCRYPTION_KEYS)")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except ValueError as exc:
            raise ValueError(
                "HERALD_ENCRYPTION_KEYS must be comma-separated 32-byte url-safe base64 Fernet keys; "
                "generate one with `herald keys generate`"
            ) from exc

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise DecryptionError("value was encrypted with a key that is no longer configured") from exc

    def rotate(self, token: str) -> str:
        """Re-encrypt with the current first key."""
        return self._fernet.rotate(token.encode()).decode()

    @staticmethod
    def generate_key() -> str:
        return Fernet.generate_key().decode()


def lookup_hash(secret_key: str, value: str) -> str:
    """Deterministic keyed hash used to look up an encrypted value by equality."""
    return hmac.new(secret_key.encode(), value.encode(), hashlib.sha256).hexdigest()
