"""Sign-in state: a signed, httpOnly, SameSite=Lax cookie holding the tenant's API key (encrypted,
so the cookie never shows it) and the session's CSRF token; every form posts that token back."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
from fastapi import Request, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer

from services.console.settings import ConsoleSettings

SESSION_COOKIE = "herald_console"
#: before sign-in there is no session: the sign-in form's token is bound to this cookie instead
PRE_CSRF_COOKIE = "herald_console_csrf"


@dataclass(frozen=True)
class Session:
    api_key: str
    csrf: str

    @property
    def key_hint(self) -> str:
        """What the header shows of the key: its first characters only."""
        return self.api_key[:8] + "…"


class NotSignedIn(Exception):
    pass


class CsrfRefused(Exception):
    pass


class Sessions:
    def __init__(self, settings: ConsoleSettings) -> None:
        secret = settings.secret_key.get_secret_value()
        self._signer = URLSafeTimedSerializer(secret, salt="herald-console-session")
        self._pre = URLSafeTimedSerializer(secret, salt="herald-console-sign-in")
        digest = hashlib.sha256(b"herald-console-key:" + secret.encode()).digest()
        self._box = Fernet(base64.urlsafe_b64encode(digest))
        self.max_age = int(settings.session_hours * 3600)
        self.secure = settings.cookie_secure
        #: sessions signed out before their cookie expires (session id → when the cookie would
        #: expire): a copy of the cookie kept by someone is refused after sign-out
        self._ended: dict[str, float] = {}

    # --- the session ------------------------------------------------------------------------

    def start(self, response: Response, api_key: str) -> Session:
        session = Session(api_key=api_key, csrf=secrets.token_urlsafe(24))
        token = self._signer.dumps({"k": self._box.encrypt(api_key.encode()).decode(), "c": session.csrf})
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=self.max_age,
            httponly=True,
            samesite="lax",
            secure=self.secure,
            path="/",
        )
        response.delete_cookie(PRE_CSRF_COOKIE, path="/")
        return session

    def end(self, response: Response, session: Session | None = None) -> None:
        """Sign out: the cookie is deleted, and the session is remembered as ended until its cookie
        would have expired, so a copy of the cookie no longer signs anyone in (in this process:
        the console runs one replica; a restart forgets, see the README)."""
        if session is not None:
            now = time.time()
            self._ended = {c: t for c, t in self._ended.items() if t > now}
            self._ended[session.csrf] = now + self.max_age
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=self.secure)

    def read(self, request: Request) -> Session | None:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None
        try:
            data = self._signer.loads(token, max_age=self.max_age)
            key = self._box.decrypt(data["k"].encode()).decode()
        except (BadSignature, InvalidToken, KeyError, TypeError, ValueError):
            return None
        csrf = str(data["c"])
        if csrf in self._ended:
            return None
        return Session(api_key=key, csrf=csrf)

    # --- CSRF -------------------------------------------------------------------------------

    @staticmethod
    def check(session: Session, submitted: str | None) -> None:
        if not submitted or not hmac.compare_digest(submitted, session.csrf):
            raise CsrfRefused()

    def pre_token(self) -> tuple[str, str]:
        """The sign-in form's CSRF token and the signed value of the cookie it is bound to."""
        raw = secrets.token_urlsafe(24)
        return raw, self._pre.dumps(raw)

    def set_pre_cookie(self, response: Response, signed: str) -> None:
        response.set_cookie(
            PRE_CSRF_COOKIE, signed, max_age=3600, httponly=True, samesite="lax", secure=self.secure, path="/"
        )

    def check_pre(self, request: Request, submitted: str | None) -> None:
        cookie = request.cookies.get(PRE_CSRF_COOKIE)
        try:
            raw = self._pre.loads(cookie or "", max_age=3600)
        except BadSignature:
            raise CsrfRefused() from None
        if not submitted or not hmac.compare_digest(submitted, str(raw)):
            raise CsrfRefused()
