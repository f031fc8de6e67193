"""Dashboard login state: signed session cookies and CSRF tokens, no table.

A session cookie is ``<expires>.<nonce>.<signature>`` signed with HMAC-SHA256. Logging out adds
the nonce to an in-process revocation set (a restart forgets it, but the cookie is cleared in the
browser too and expires after ``session_hours``). The login form uses a signed double-submit
token (cookie plus hidden field); forms of a logged-in user carry a token derived from the
session nonce. Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

SESSION_COOKIE = "cohortbot_dashboard"
CSRF_COOKIE = "cohortbot_dashboard_csrf"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def password_matches(given: str, expected: str) -> bool:
    """Constant-time password check; an empty expected password never matches."""
    if not expected:
        return False
    # Compare digests so the time does not depend on the lengths either.
    a = hashlib.sha256(given.encode("utf-8")).digest()
    b = hashlib.sha256(expected.encode("utf-8")).digest()
    return hmac.compare_digest(a, b)


@dataclass
class Signer:
    """Signs and checks session cookies and CSRF tokens with one secret."""

    secret: bytes
    session_length: timedelta
    revoked: set[str] = field(default_factory=set)

    def _sign(self, purpose: str, value: str) -> str:
        mac = hmac.new(self.secret, f"{purpose}:{value}".encode(), hashlib.sha256).digest()
        return _b64(mac)

    def new_session(self, now: datetime) -> str:
        """A fresh session cookie value, valid for :attr:`session_length` from ``now``."""
        expires = int((now + self.session_length).timestamp())
        nonce = _b64(secrets.token_bytes(18))
        body = f"{expires}.{nonce}"
        return f"{body}.{self._sign('session', body)}"

    def session_nonce(self, cookie: str | None, now: datetime) -> str | None:
        """The nonce of a valid, unexpired, not revoked session cookie; else None."""
        if not cookie or cookie.count(".") != 2:
            return None
        expires, nonce, signature = cookie.split(".")
        body = f"{expires}.{nonce}"
        if not hmac.compare_digest(signature, self._sign("session", body)):
            return None
        if not expires.isdigit() or int(expires) <= now.timestamp():
            return None
        if nonce in self.revoked:
            return None
        return nonce

    def revoke(self, nonce: str) -> None:
        self.revoked.add(nonce)

    def session_csrf(self, nonce: str) -> str:
        """The CSRF token for forms of the session ``nonce``."""
        return self._sign("csrf", nonce)

    def check_session_csrf(self, nonce: str, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.session_csrf(nonce).encode())

    def new_login_token(self) -> str:
        """A signed token for the login form (set as a cookie and as a hidden field)."""
        nonce = _b64(secrets.token_bytes(18))
        return f"{nonce}.{self._sign('login', nonce)}"

    def check_login_token(self, cookie: str | None, field_value: str) -> bool:
        """The form's token equals the cookie's and carries our signature."""
        if not cookie or not field_value or cookie.count(".") != 1:
            return False
        if not hmac.compare_digest(cookie.encode(), field_value.encode()):
            return False
        nonce, signature = cookie.split(".")
        return hmac.compare_digest(signature, self._sign("login", nonce))
