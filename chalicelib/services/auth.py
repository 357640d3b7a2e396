"""Passwords, tokens and login throttling (SPEC §3).

Tokens: HS256 only (the algorithm is pinned, so a token claiming ``none`` or RS256 is refused), every
claim required, a small leeway for clock skew between API Gateway's Lambdas and the client. Expiry is
checked against the project clock, not PyJWT's own ``now``, so a frozen test clock means the same thing
everywhere.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass

import jwt

from chalicelib import clock
from chalicelib.domain.audit import Actor
from chalicelib.domain.errors import RateLimited, Unauthenticated, ValidationFailed
from chalicelib.domain.roles import Role
from chalicelib.services.ports import LoginThrottle, Metrics, User, UserStore

ISSUER = "loan-crm"
AUDIENCE = "loan-crm-api"
ALGORITHM = "HS256"
LEEWAY_SECONDS = 30
REQUIRED_CLAIMS = ("sub", "role", "iat", "exp", "iss", "aud")
MIN_SECRET_BYTES = 32


def hash_password(password: str, iterations: int) -> str:
    """PBKDF2-SHA256 with a per-user salt; the iteration count is stored so it can be raised later
    without invalidating existing hashes."""
    salt = os.urandom(16)
    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """False for a wrong password and for a malformed stored hash (never an exception: a damaged
    user record must not turn a login into a 500)."""
    try:
        scheme, iterations, salt_b64, digest_b64 = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt_b64), int(iterations))
        return hmac.compare_digest(digest, base64.b64decode(digest_b64))
    except ValueError:  # also binascii.Error; int() and pbkdf2_hmac raise it for a bad count
        return False


def _check_secret(secret: str) -> bytes:
    key = secret.encode()
    if len(key) < MIN_SECRET_BYTES:
        raise RuntimeError(f"JWT secret must be at least {MIN_SECRET_BYTES} bytes")
    return key


@dataclass(frozen=True)
class IssuedToken:
    access_token: str
    expires_in: int
    role: str
    sub: str


def issue_token(sub: str, role: str, secret: str, ttl_seconds: int) -> IssuedToken:
    now = clock.now_epoch()
    claims = {"sub": sub, "role": role, "iat": now, "exp": now + ttl_seconds, "iss": ISSUER, "aud": AUDIENCE}
    token = jwt.encode(claims, _check_secret(secret), algorithm=ALGORITHM)
    return IssuedToken(access_token=token, expires_in=ttl_seconds, role=role, sub=sub)


def decode_token(token: str, secret: str) -> Actor:
    """The caller behind a bearer token, or Unauthenticated with a reason safe to show."""
    try:
        claims = jwt.decode(
            token,
            _check_secret(secret),
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": list(REQUIRED_CLAIMS), "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError as exc:
        raise Unauthenticated(f"invalid token: {exc}") from None
    now = clock.now_epoch()
    exp, iat = claims["exp"], claims["iat"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (exp, iat)):
        raise Unauthenticated("invalid token: iat and exp must be integers")
    if exp + LEEWAY_SECONDS <= now:
        raise Unauthenticated("token expired")
    if iat - LEEWAY_SECONDS > now:
        raise Unauthenticated("token issued in the future")
    sub, role = claims["sub"], claims["role"]
    if not isinstance(sub, str) or not sub:
        raise Unauthenticated("invalid token: sub must be a non-empty string")
    if role not in {r.value for r in Role}:
        raise Unauthenticated("invalid token: unknown role")
    return Actor(sub=sub, role=role)


@functools.lru_cache(maxsize=4)
def _dummy_hash(iterations: int) -> str:
    """A hash to check unknown usernames against, so they cost the same time as real ones."""
    return hash_password("not-a-real-password", iterations)


@dataclass
class AuthService:
    users: UserStore
    throttle: LoginThrottle
    metrics: Metrics
    secret: Callable[[], str]
    ttl_seconds: int
    max_failures: int
    window_seconds: int
    iterations: int

    def login(self, username: str, password: str) -> IssuedToken:
        """Check a password; throttle a username after repeated failures whether or not it exists,
        so the answer never tells an attacker which usernames are real."""
        username = username.strip().lower()
        if not username or not password:
            raise ValidationFailed("username and password are required")
        now = clock.now_epoch()
        if self.throttle.failures(username, now - self.window_seconds) >= self.max_failures:
            self.metrics.count("AuthThrottled")
            raise RateLimited(
                "too many failed logins for this username; try again later",
                {"retry_after_seconds": self.window_seconds},
            )
        user = self.users.get(username)
        valid = verify_password(password, user.password_hash if user else _dummy_hash(self.iterations))
        if not (user and user.active and valid):
            self.throttle.record_failure(username, now, self.window_seconds)
            self.metrics.count("AuthFailed")
            raise Unauthenticated("wrong username or password")
        self.throttle.clear(username)
        return issue_token(user.username, user.role, self.secret(), self.ttl_seconds)

    def add_user(self, username: str, password: str, role: Role) -> User:
        """Create or replace a user (ops CLI and demo seed; there is no public sign-up)."""
        if len(password) < 8:
            raise ValidationFailed("password must be at least 8 characters")
        user = User(
            username=username.strip().lower(), role=role.value, password_hash=hash_password(password, self.iterations)
        )
        self.users.put(user)
        return user
