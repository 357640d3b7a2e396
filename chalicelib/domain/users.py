"""Users: what a username and a password must be, and which fields of a user anyone may see
(docs/auth.md, "Users").

Pure rules: the service hashes and stores, the API reads requests; both ask here what is acceptable.
"""

from __future__ import annotations

import re

USERNAME_PATTERN = re.compile(r"^[a-z0-9._-]{3,64}$")
"""Lower-case only: logins are matched after lower-casing, so an upper-case name could never log in."""
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024
"""Far above any passphrase; only there so a megabyte "password" is refused, not hashed."""
MAX_TEXT_CHARS = 200
"""display_name and branch."""

PUBLIC_FIELDS = ("username", "role", "display_name", "branch", "active", "created_at", "updated_at")
"""Everything an answer, a log line or an audit entry may show of a user. The password hash and the
token cut-off are never among them."""

COMMON_PASSWORDS = frozenset(
    {
        "123456789012",
        "1234567890123",
        "12345678901234",
        "123456123456",
        "111111111111",
        "000000000000",
        "123123123123",
        "qwertyuiop12",
        "qwertyuiop123",
        "qwertyuiopasdf",
        "1q2w3e4r5t6y",
        "1qaz2wsx3edc",
        "zaq12wsxcde3",
        "asdfghjkl123",
        "password1234",
        "password12345",
        "password123456",
        "passwordpassword",
        "password@123",
        "password@1234",
        "p@ssw0rd1234",
        "p@ssword1234",
        "passw0rd1234",
        "welcome12345",
        "welcome@1234",
        "welcome123456",
        "letmein12345",
        "iloveyou1234",
        "sunshine1234",
        "princess1234",
        "football1234",
        "baseball1234",
        "superman1234",
        "trustno11234",
        "changeme1234",
        "administrator",
        "admin1234567",
        "admin@123456",
        "adminadmin12",
        "qwerty123456",
        "abc123456789",
        "abcdefghijkl",
        "abcd12345678",
        "india@123456",
        "india1234567",
        "bharat123456",
        "monkey123456",
        "dragon123456",
        "master123456",
        "loancrm12345",
        "correcthorsebatterystaple",
    }
)
"""Well-known passwords (and the obvious long variants people reach for when told "12 characters"),
compared case-insensitively. A short list on purpose: it stops the guesses every attacker tries
first; length does the rest."""


def username_problem(username: str) -> str | None:
    """Why ``username`` cannot be a username, or None."""
    if not USERNAME_PATTERN.fullmatch(username):
        return "3 to 64 of a-z 0-9 . _ - (lower case)"
    return None


def password_problems(password: str, username: str) -> list[str]:
    """Every reason ``password`` is not acceptable for ``username`` (empty when it is). The messages
    never repeat the password."""
    problems = []
    if len(password) < MIN_PASSWORD_CHARS:
        problems.append(f"at least {MIN_PASSWORD_CHARS} characters")
    if len(password) > MAX_PASSWORD_CHARS:
        problems.append(f"at most {MAX_PASSWORD_CHARS} characters")
    folded = password.casefold()
    if username and username.casefold() in folded:
        problems.append("must not contain the username")
    if folded in COMMON_PASSWORDS:
        problems.append("too common: it is on the list of passwords attackers try first")
    return problems
