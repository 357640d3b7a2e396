"""Financial guard (SPEC §4): money and delinquency fields are never set through the API.

They change only through payments, reversals and the day-end job, each of which audits itself. A
request naming any protected field — in any letter case, at any depth, even beside allowed fields —
is refused whole, so a client cannot get half of a mixed body applied.
"""

from __future__ import annotations

from typing import Any

PROTECTED_NAMES = frozenset(
    {
        "dpd",
        "bucket",
        "status",
        "classification",
        "principal_paise",
        "schedule",
        "npa_since",
        "legal",
        "dpd_as_of",
        "version",
    }
)


def _normalise(key: str) -> str:
    # "DPD", "Dpd-As-Of" and "dpdAsOf" are all attempts at the same field.
    return "".join(ch for ch in key.lower() if ch.isalnum())


_PROTECTED_NORMALISED = frozenset(_normalise(n) for n in PROTECTED_NAMES)


def is_protected(key: str) -> bool:
    norm = _normalise(key)
    return norm in _PROTECTED_NORMALISED or norm.endswith("paise")


def protected_paths(body: Any, prefix: str = "") -> list[str]:
    """Every path in ``body`` whose key names a protected field, e.g. ``["borrower.Bucket"]``."""
    found: list[str] = []
    if isinstance(body, dict):
        for key, value in body.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if is_protected(str(key)):
                found.append(path)
            found += protected_paths(value, path)
    elif isinstance(body, list):
        for index, value in enumerate(body):
            found += protected_paths(value, f"{prefix}[{index}]")
    return found
