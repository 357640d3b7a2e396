"""Passwords, tokens and login throttling (the rules in words: docs/auth.md).

Tokens: HS256 only (the algorithm is pinned, so a token claiming ``none`` or RS256 is refused), every
claim required and of the type we issue, a small leeway for clock skew between API Gateway's Lambdas
and the client. The times (``exp``, ``iat``, ``nbf``) are checked against the project clock, not
PyJWT's own ``now``, so a frozen test clock means the same thing everywhere. Any malformed token is a
401 (Unauthenticated), never a crash.

Logins: each attempt is counted for its (username, source address) before the password is checked,
so concurrent guesses cannot get past the allowance; a success clears the count.

Revocation: a token that decodes is still refused when its user no longer exists, is inactive, or
changed password after the token was issued (``iat`` before the user's ``tokens_valid_after``). The
user's state is cached per container for ``user_cache_seconds``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt.exceptions import InvalidSubjectError

from chalicelib import clock
from chalicelib.domain.audit import Actor
from chalicelib.domain.errors import RateLimited, Unauthenticated, ValidationFailed
from chalicelib.domain.roles import Role
from chalicelib.services.ports import LoginThrottle, Metrics, ThrottleKey, User, UserStore

ISSUER = "loan-crm"
AUDIENCE = "loan-crm-api"
ALGORITHM = "HS256"
LEEWAY_SECONDS = 30
REQUIRED_CLAIMS = ("sub", "role", "iat", "exp", "iss", "aud")
ROLE_NAMES = frozenset(r.value for r in Role)
MIN_SECRET_BYTES = 32
MAX_TOKEN_CHARS = 4096
"""Our tokens are about 250 characters; anything this long is refused before it is parsed."""
MAX_EPOCH_SECONDS = 253_402_300_799
"""9999-12-31T23:59:59Z, the last second a calendar date can name: a larger iat or exp is no time."""
MAX_SUB_CHARS = 64
"""The longest username (domain/users.py). A longer sub names nobody, and one past DynamoDB's 2048-byte key
limit would make the user lookup fail with a 500 instead of a miss."""
COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
"""Three base64url segments without padding, as RFC 7515 writes them and as we issue them. PyJWT also
accepts ``=`` padding, which would make two spellings of one token; and this does not depend on the
PyJWT version rejecting characters outside the alphabet (older ones skipped them silently). The
signature may be empty here so that an unsigned token is refused for its algorithm, which says more."""
UNKNOWN_SOURCE = "unknown"
IPV6_THROTTLE_PREFIX = 64


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
class VerifiedToken:
    """What a good token says: who (``actor``) and when it was issued (``iat``, epoch seconds), which
    the revocation check compares with the user's ``tokens_valid_after``."""

    actor: Actor
    iat: int


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
    """The caller behind a bearer token, or Unauthenticated with a reason safe to show: the reason
    names what is wrong, never the token or a claim's value."""
    return decode_verified(token, secret).actor


def decode_verified(token: str, secret: str) -> VerifiedToken:
    """:func:`decode_token` with the token's ``iat`` as well; refuses exactly what it refuses."""
    key = _check_secret(secret)
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthenticated("invalid token: too long")
    if not COMPACT_JWS.fullmatch(token):
        raise Unauthenticated("invalid token: malformed")
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={
                "require": list(REQUIRED_CLAIMS),
                # Times are checked in _actor, against the project clock and with our leeway: PyJWT
                # would use the wall clock, no leeway unless told, and accept "123" or 1.5 as a time.
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "strict_aud": True,
            },
        )
    except jwt.PyJWTError as exc:
        raise Unauthenticated(_refusal(exc)) from None
    return VerifiedToken(actor=_actor(claims, clock.now_epoch()), iat=claims["iat"])


_REFUSALS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.InvalidSignatureError, "invalid token: bad signature"),
    (jwt.InvalidAlgorithmError, "invalid token: algorithm not allowed"),
    (jwt.InvalidAudienceError, "invalid token: wrong audience"),
    (jwt.InvalidIssuerError, "invalid token: wrong issuer"),
    (InvalidSubjectError, "invalid token: sub must be a username"),
    (jwt.DecodeError, "invalid token: malformed"),
)
"""PyJWT's own messages may quote parts of the token, so callers see one of these instead. Subclasses
come before their bases (InvalidSignatureError is a DecodeError)."""


def _refusal(exc: jwt.PyJWTError) -> str:
    # PyJWT only reports claims we named, but check before putting one in a message anyway.
    if isinstance(exc, jwt.MissingRequiredClaimError) and exc.claim in REQUIRED_CLAIMS:
        return f"invalid token: claim {exc.claim} is missing"
    return next((message for kind, message in _REFUSALS if isinstance(exc, kind)), "invalid token")


def _is_epoch(value: object) -> bool:
    """Integer epoch seconds within the range of a calendar date (a bool is not an integer here)."""
    return type(value) is int and 0 <= value <= MAX_EPOCH_SECONDS


def _actor(claims: dict[str, Any], now: int) -> Actor:
    """Type and range checks PyJWT leaves to us; every claim was present and iss/aud already match."""
    exp, iat = claims["exp"], claims["iat"]
    if not (_is_epoch(exp) and _is_epoch(iat)):
        raise Unauthenticated("invalid token: iat and exp must be integer epoch seconds")
    if exp <= iat:
        raise Unauthenticated("invalid token: exp must be after iat")
    if exp + LEEWAY_SECONDS <= now:
        raise Unauthenticated("token expired")
    if iat - LEEWAY_SECONDS > now:
        raise Unauthenticated("token issued in the future")
    if "nbf" in claims:
        nbf = claims["nbf"]
        if not _is_epoch(nbf):
            raise Unauthenticated("invalid token: nbf must be integer epoch seconds")
        if nbf - LEEWAY_SECONDS > now:
            raise Unauthenticated("token not yet valid")
    sub, role = claims["sub"], claims["role"]
    # isprintable() also refuses lone surrogates, which no stored username can hold.
    # "#" is in no username or system actor, and the audit trail's stored keys use it as a separator.
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUB_CHARS or not sub.isprintable() or "#" in sub:
        raise Unauthenticated("invalid token: sub must be a username")
    # A list or object role is unhashable: check the type before looking it up in a set.
    if not isinstance(role, str) or role not in ROLE_NAMES:
        raise Unauthenticated("invalid token: unknown role")
    return Actor(sub=sub, role=role)


def throttle_source(source_ip: str | None) -> str:
    """The source a login attempt is counted against: an IPv4 address as it is, an IPv6 address by its
    /64 network (one subscriber usually holds a whole /64, and counting single addresses would give an
    attacker a fresh allowance per address), an IPv4-mapped IPv6 address as the IPv4 one.

    No address, or one that does not parse, is ``unknown``: API Gateway always sets the caller's
    address, so only direct invocations and test harnesses lack one, and those share one count per
    username (the throttle fails closed rather than open). The result never contains ``#``."""
    try:
        address = ipaddress.ip_address(source_ip or "")
    except ValueError:
        return UNKNOWN_SOURCE
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(address), IPV6_THROTTLE_PREFIX), strict=False))
    return str(address)


@functools.lru_cache(maxsize=4)
def _dummy_hash(iterations: int) -> str:
    """A hash to check unknown usernames against, so they cost the same time as real ones."""
    return hash_password("not-a-real-password", iterations)


@dataclass(frozen=True)
class _UserState:
    """What the revocation check needs of a user, and when it was read (epoch seconds)."""

    active: bool
    tokens_valid_after: int
    read_at: int


REVOKED = "token no longer valid; log in again"
"""One message whether the user is gone, inactive or changed password: it tells a token's holder no more."""


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
    user_cache_seconds: int = 0
    """How long a user's state may be reused for the revocation check (0: read on every request)."""
    _states: dict[str, _UserState] = field(default_factory=dict, init=False, repr=False)

    def authenticate(self, token: str) -> VerifiedToken:
        """A token that decodes (:func:`decode_verified`) and has not been revoked since
        (:meth:`require_current`). Unauthenticated otherwise; Unavailable when the user cannot be read."""
        verified = decode_verified(token, self.secret())
        self.require_current(verified.actor.sub, verified.iat)
        return verified

    def require_current(self, username: str, iat: int) -> None:
        """Unauthenticated unless ``username`` exists, is active and has not ended tokens issued at
        ``iat`` (a password change or a deactivation at or after it, to the second). The role is not
        checked: a role change takes effect with the next token."""
        state = self._state(username)
        if state is None or not state.active or iat < state.tokens_valid_after:
            raise Unauthenticated(REVOKED)

    def forget(self, username: str) -> None:
        """Drop a cached state: this container changed the user, so its next request reads it again."""
        self._states.pop(username, None)

    def _state(self, username: str) -> _UserState | None:
        now = clock.now_epoch()
        cached = self._states.get(username)
        if cached is not None and 0 <= now - cached.read_at < self.user_cache_seconds:
            return cached
        user = self.users.get(username)  # a storage failure is Unavailable: 503, never a pass
        if user is None:
            # Not cached: only a token we signed names a user, and a user created later must not wait.
            self._states.pop(username, None)
            return None
        state = _UserState(active=user.active, tokens_valid_after=user.tokens_valid_after, read_at=now)
        if self.user_cache_seconds > 0:
            self._states[username] = state
        return state

    def login(self, username: str, password: str, source_ip: str | None = None) -> IssuedToken:
        """Check a password, at most ``max_failures`` times per window for one username from one
        source (see :func:`throttle_source`).

        The attempt is counted before the password is checked, atomically, so concurrent guesses
        cannot all slip in under the limit; over it, the answer is RateLimited without a check, even
        for the right password. Unknown usernames are counted and checked the same way, so the answer
        never tells an attacker which usernames are real. A success clears the count."""
        username = username.strip().lower()
        if not username or not password:
            raise ValidationFailed("username and password are required")
        now = clock.now_epoch()
        key = ThrottleKey(username=username, source=throttle_source(source_ip))
        window = self.throttle.count_attempt(key, now, self.window_seconds)
        if window.attempts > self.max_failures:
            self.metrics.count("AuthThrottled")
            # The window stops counting once window_seconds have passed since it opened.
            retry_after = window.started_at + self.window_seconds + 1 - now
            raise RateLimited(
                "too many failed logins for this username; try again later",
                {"retry_after_seconds": retry_after},
            )
        user = self.users.get(username)
        valid = verify_password(password, user.password_hash if user else _dummy_hash(self.iterations))
        if not (user and user.active and valid):
            self.metrics.count("AuthFailed")
            raise Unauthenticated("wrong username or password")
        self.throttle.clear(key)
        return issue_token(user.username, user.role, self.secret(), self.ttl_seconds)

    def add_user(self, username: str, password: str, role: Role) -> User:
        """Create or replace a user, unaudited: the local demo seed (whose published demo passwords the
        policy would refuse) and test set-up. The API's and the ops CLI's users go through
        ``UserService``, with its password policy and audit.

        Replacing a user is a password reset: tokens issued before it are ended, as by the API."""
        if len(password) < 8:
            raise ValidationFailed("password must be at least 8 characters")
        name = username.strip().lower()
        now, now_iso = clock.now_epoch(), clock.now_iso()
        existing = self.users.get(name)
        user = User(
            username=name,
            role=role.value,
            password_hash=hash_password(password, self.iterations),
            display_name=existing.display_name if existing else None,
            branch=existing.branch if existing else None,
            created_at=existing.created_at if existing and existing.created_at else now_iso,
            updated_at=now_iso,
            tokens_valid_after=now if existing else 0,
            # A new version, so a concurrent API update of the replaced user is refused, not merged.
            version=existing.version + 1 if existing else 1,
        )
        self.users.put(user)
        self.forget(name)
        return user
