"""Financial guard: money and delinquency fields are never set through the API.

They change only through payments, reversals and the day-end job, each of which audits itself. A
request naming any protected field — in any letter case, at any depth, even beside allowed fields —
is refused whole, so a client cannot get half of a mixed body applied.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def key_paths(body: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """The location of every key in ``body``, in document order: ``("borrower", "contacts", 1, "x")``."""
    found: list[tuple[str | int, ...]] = []
    if isinstance(body, dict):
        for key, value in body.items():
            found.append((*prefix, str(key)))
            found += key_paths(value, (*prefix, str(key)))
    elif isinstance(body, list):
        for index, value in enumerate(body):
            found += key_paths(value, (*prefix, index))
    return found


def protected_among(paths: Iterable[tuple[str | int, ...]]) -> list[str]:
    """Those key locations whose key names a protected field, written like ``borrower.contacts[1].x``,
    each once. Fed every key of a body as the client wrote it (a key repeated in one object included),
    nothing a client sends can slip past the guard."""
    found: list[str] = []
    for path in paths:
        if path and isinstance(path[-1], str) and is_protected(path[-1]):
            shown = _shown(path)
            if shown not in found:
                found.append(shown)
    return found


def protected_paths(body: Any) -> list[str]:
    """Every path in ``body`` whose key names a protected field, e.g. ``["borrower.Bucket"]``."""
    return protected_among(key_paths(body))


def _shown(path: tuple[str | int, ...]) -> str:
    shown = ""
    for part in path:
        if isinstance(part, int):
            shown += f"[{part}]"
        else:
            shown += f".{part}" if shown else part
    return shown
