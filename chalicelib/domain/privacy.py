"""What the system may write about a borrower, and never about a credential, where more people read it
than the borrower's own collectors: the logs above all (docs/logging.md).

Two tools:

- ``mask_phone``, ``mask_email`` and ``mask_name`` are for code that knowingly mentions a borrower (a
  reminder line says which phone it went to). They keep just enough to tell two borrowers apart on a
  call with the collector, and applying one twice changes nothing.
- :func:`scrub` is the safety net the log formatter runs over every line, whatever a call site
  passed: it cannot know a name when it sees one, so it masks what has a recognisable shape (an Indian
  mobile number, an e-mail address, a JWT or an ``Authorization`` value) and what sits under a key that
  says what it is (``password``, ``token``, ``phone``, a borrower's ``name``...).

Pure: the rules are tested on their own, and the ops tools print with the same masks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

REDACTED = "[redacted]"
"""What replaces a secret, or personal data that has no useful masked form (an address)."""

# --- the masks --------------------------------------------------------------------------------------


def mask_phone(phone: str) -> str:
    """What logs may show of a borrower's phone: the last four digits."""
    digits = [c for c in phone if c.isdigit()]
    return "*" * max(0, len(digits) - 4) + "".join(digits[-4:])


def mask_email(email: str) -> str:
    """The first character of the local part and the domain: ``a***@example.in``."""
    local, at, domain = email.rpartition("@")
    if not at:
        return REDACTED
    return f"{local.strip('*')[:1]}***@{domain}"


def mask_name(name: str) -> str:
    """The initial of each word: ``Asha Rao`` -> ``A*** R***`` (the length of each word is not kept)."""
    return " ".join(f"{word[:1]}***" for word in name.split())


# --- the safety net ---------------------------------------------------------------------------------

_NOT_ALNUM_BEFORE = r"(?<![A-Za-z0-9])"
_NOT_ALNUM_AFTER = r"(?![A-Za-z0-9])"

PHONE = re.compile(
    _NOT_ALNUM_BEFORE
    + r"(?:(?:\+|%2[Bb]|00)?91[ -]?|0)?[6-9](?:\d{4}[ -]?\d{5}|\d{2}[ -]?\d{3}[ -]?\d{4})"
    + _NOT_ALNUM_AFTER
)
"""An Indian mobile number as people write it: ten digits starting 6-9, optionally split 5+5 or 3+3+4
and preceded by ``+91`` (also URL-encoded, ``%2B91``), ``0091``, ``91`` or ``0``. A digit run that is
longer, or glued to letters (a ULID, a UTR like ``SBIN0123456789``), is not one, so ids stay
readable; underscores separate, so ``phone_9876543210`` is caught. The price: a ten-digit amount
starting 6-9 written as text is masked too, which a log can afford."""
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+?(?:@|%40)[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
"""An e-mail address, also URL-encoded (``%40`` for the ``@``, as in a logged query string)."""
JWT = re.compile(r"(?<![A-Za-z0-9])eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
"""A JSON Web Token: three base64url parts, the first of which always starts ``eyJ`` (``{"``)."""
AUTH_SCHEME = re.compile(r"(?i)(?<![A-Za-z0-9])(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}")
"""An ``Authorization`` value: the scheme and a credential of eight characters or more (so the words
"missing bearer token" stay as they are)."""
SECRET_ASSIGNMENT = re.compile(
    r"(?i)((?:password|passwd|secret|token|authorization|api[_-]?key)[\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s\"',;&}]+)"
)
"""``password=...`` or ``"token": "..."`` inside a text: an exception message quoting a body, a URL."""

SECRET_KEY = re.compile(
    r"(?i)password|passwd|passphrase|secret|token|authori[sz]ation|cookie|api[_-]?key|credential|private[_-]?key|jwt"
)
"""A key whose value is never written, whatever the value looks like."""
WITHHELD_KEYS = frozenset({"address"})
"""Personal data with no useful masked form: withheld like a secret."""
_FIVE_DIGITS = re.compile(r"(?:\d[ -]?){5}")
PERSONAL_KEYS: dict[str, Callable[[str], str]] = {
    "phone": lambda v: mask_phone(v) if _FIVE_DIGITS.search(v) else v,
    "mobile": lambda v: mask_phone(v) if _FIVE_DIGITS.search(v) else v,
    "email": lambda v: mask_email(v) if "@" in v else v,
    "borrower_name": mask_name,
}
"""Keys (any letter case) whose text is a borrower's, masked even where its shape says nothing. The
masked forms are left as they are (a masked phone has four digits, a masked name is stable)."""
BORROWER_KEYS: dict[str, Callable[[str], str]] = {**PERSONAL_KEYS, "name": mask_name}
"""Inside a ``borrower`` object, ``name`` is the borrower's too (elsewhere it is a logger's or a flag's)."""
MAX_DEPTH = 12
"""Deeper than this a value is written as masked text: log payloads are shallow, and a cycle must end."""


def scrub_text(text: str) -> str:
    """``text`` with every token, secret assignment, e-mail address and mobile number masked."""
    text = JWT.sub(REDACTED, text)
    text = AUTH_SCHEME.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + REDACTED, text)
    text = EMAIL.sub(lambda m: mask_email(m.group(0)), text)
    return PHONE.sub(lambda m: mask_phone(m.group(0)), text)


def scrub(value: Any) -> Any:
    """A log payload as it may be written: objects and arrays walked, the value of a secret key
    withheld, a personal key's value masked, every other text passed through :func:`scrub_text`.
    Numbers, booleans and null stay as they are; anything else is written as its masked ``str`` (as
    the JSON serializer would have written it), so an object logged by mistake is masked too."""
    return _scrub(value, PERSONAL_KEYS, 0)


def _scrub(value: Any, masks: Mapping[str, Callable[[str], str]], depth: int) -> Any:
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, int):
        # A phone stored as a number is still a phone; any other integer (counts, paise) is kept.
        return value if not PHONE.fullmatch(str(value)) else mask_phone(str(value))
    if depth > MAX_DEPTH:
        return scrub_text(str(value))
    if isinstance(value, Mapping):
        return {scrub_text(str(key)): _scrub_item(str(key).lower(), item, masks, depth) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(item, masks, depth + 1) for item in value]
    return scrub_text(value if isinstance(value, str) else str(value))


def _scrub_item(key: str, item: Any, masks: Mapping[str, Callable[[str], str]], depth: int) -> Any:
    if item is None:
        return None
    if key in WITHHELD_KEYS or SECRET_KEY.search(key):
        return REDACTED
    mask = masks.get(key)
    if mask is not None and isinstance(item, str | int) and not isinstance(item, bool):
        return scrub_text(mask(str(item)))
    return _scrub(item, BORROWER_KEYS if key == "borrower" else PERSONAL_KEYS, depth + 1)
