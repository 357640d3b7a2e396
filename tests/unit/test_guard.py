"""The financial guard (docs/rules.md): any protected name, in any letter case or spelling, at any depth."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.domain.guard import is_protected, protected_paths

# docs/rules.md, written out here rather than imported, so the test does not share a mistake with the code.
DOCUMENTED_PROTECTED = [
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
]
OTHER_PAISE = [
    "overdue_paise",
    "outstanding_principal_paise",
    "amount_paise",
    "paid_interest_paise",
    "interest_paise",
    "emi_paise",
]


def _words(name: str) -> list[str]:
    return name.split("_")


def spellings(name: str) -> list[str]:
    """The ways a client might spell a snake_case field name."""
    words = _words(name)
    camel = words[0] + "".join(w.capitalize() for w in words[1:])
    return sorted(
        {
            name,
            name.upper(),
            name.capitalize(),
            "_".join(w.capitalize() for w in words),
            "".join(ch.upper() if i % 2 else ch for i, ch in enumerate(name)),
            camel,
            camel[0].upper() + camel[1:],
            "-".join(words),
            "-".join(words).upper(),
            "-".join(w.capitalize() for w in words),
            " ".join(words),
            f"_{name}_",
        }
    )


ALL_VARIANTS = [(base, variant) for base in DOCUMENTED_PROTECTED + OTHER_PAISE for variant in spellings(base)]


def test_spellings_cover_the_cases_the_spec_names() -> None:
    variants = spellings("dpd_as_of")
    for expected in ("dpd_as_of", "DPD_AS_OF", "Dpd_as_of", "dpdAsOf", "DpdAsOf", "dpd-as-of", "Dpd-As-Of"):
        assert expected in variants


@pytest.mark.parametrize(("base", "key"), ALL_VARIANTS)
def test_every_spelling_of_a_protected_name_is_flagged_at_the_top(base: str, key: str) -> None:
    assert is_protected(key)
    assert protected_paths({key: 1}) == [key]


@pytest.mark.parametrize(("base", "key"), ALL_VARIANTS)
def test_protected_name_nested_beside_allowed_fields(base: str, key: str) -> None:
    body = {"notes": "call after 6pm", "borrower": {"name": "Asha", "phone": "9876543210", key: 0}}
    assert protected_paths(body) == [f"borrower.{key}"]


@pytest.mark.parametrize("base", DOCUMENTED_PROTECTED + OTHER_PAISE)
def test_protected_name_inside_lists_at_depth(base: str) -> None:
    body = {
        "borrower": {"name": "Asha", "addresses": [{"line1": "MG Road"}, {"line1": "x", "extra": [[{base: 5}]]}]},
    }
    assert protected_paths(body) == [f"borrower.addresses[1].extra[0][0].{base}"]


def test_top_level_list_body() -> None:
    assert protected_paths([{"name": "x"}, {"DPD": 3}]) == ["[1].DPD"]


def test_every_protected_key_in_a_body_is_reported_once() -> None:
    body = {
        "Status": "CLOSED",
        "borrower": {"name": "Asha", "overdueAmountPaise": 0},
        "schedule": [{"due_date": "2025-01-01", "principal_paise": 1}],
        "legal": {"escalated": False},
    }
    assert sorted(protected_paths(body)) == sorted(
        ["Status", "borrower.overdueAmountPaise", "schedule", "schedule[0].principal_paise", "legal"]
    )


def test_protected_key_with_a_null_or_empty_value_is_still_flagged() -> None:
    assert protected_paths({"npa_since": None}) == ["npa_since"]
    assert protected_paths({"legal": {}}) == ["legal"]
    assert protected_paths({"schedule": []}) == ["schedule"]


ALLOWED_BODIES: list[Any] = [
    {},
    {"notes": "promised to pay on Friday"},
    {"notes": None},
    {"borrower": {"name": "Asha Rao", "phone": "+919876543210"}},
    {"borrower": {"email": "asha@example.com", "address": "12 MG Road, Pune"}},
    {"borrower": {"email": None, "address": None}, "notes": ""},
    {"borrower": {"name": "Asha", "phone": "9876543210", "email": "a@b.in", "address": "x"}, "notes": "n"},
]


@pytest.mark.parametrize("body", ALLOWED_BODIES)
def test_contact_and_notes_bodies_are_not_flagged(body: Any) -> None:
    assert protected_paths(body) == []


@pytest.mark.parametrize(
    "body",
    [
        {"notes": "dpd is 45, bucket 31-60, status ACTIVE"},
        {"borrower": {"name": "Status Quo", "address": "Schedule Lane"}},
        {"notes": ["dpd", "principal_paise", {"x": "version"}]},
    ],
)
def test_protected_words_in_values_are_not_keys(body: Any) -> None:
    assert protected_paths(body) == []


@pytest.mark.parametrize(
    "key",
    ["name", "phone", "email", "address", "notes", "borrower", "branch", "collector_id", "paisley", "dpdx", "statuses"],
)
def test_names_that_only_resemble_protected_ones_are_allowed(key: str) -> None:
    assert not is_protected(key)


@pytest.mark.parametrize("scalar", ["dpd", 0, None, 1.5, True])
def test_scalar_bodies_have_no_paths(scalar: Any) -> None:
    assert protected_paths(scalar) == []


# Keys that cannot be protected: a fixed vocabulary of contact-ish names plus generated ones that end
# in a digit (no protected name does, and none can be spelled with a trailing digit).
SAFE_KEYS = st.one_of(
    st.sampled_from(["name", "phone", "email", "address", "notes", "city", "pin", "line1", "tags", "alt"]),
    st.builds(
        lambda word, digit: f"{word}{digit}",
        st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=6),
        st.integers(0, 9),
    ),
)
PROTECTED_KEYS = st.sampled_from(DOCUMENTED_PROTECTED + OTHER_PAISE).flatmap(lambda n: st.sampled_from(spellings(n)))
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))


def safe_bodies(max_leaves: int) -> st.SearchStrategy[Any]:
    return st.recursive(
        SCALARS,
        lambda children: st.one_of(
            st.lists(children, max_size=3),
            st.dictionaries(SAFE_KEYS, children, max_size=3),
        ),
        max_leaves=max_leaves,
    )


SAFE_BODIES = safe_bodies(12)
SIBLINGS = safe_bodies(3)


@given(SAFE_BODIES)
def test_bodies_without_protected_keys_are_never_flagged(body: Any) -> None:
    assert protected_paths(body) == []


Step = tuple[str, Any]
"""One step down into a container: ``("key", name)`` into a dict, ``("index", n)`` into a list."""


@st.composite
def body_with_one_protected_key(draw: st.DrawFn) -> tuple[Any, str]:
    """A safe body with one protected key planted somewhere, and the path it must be reported at."""
    steps: list[Step] = draw(
        st.lists(
            st.one_of(st.tuples(st.just("key"), SAFE_KEYS), st.tuples(st.just("index"), st.integers(0, 3))),
            max_size=5,
        )
    )
    protected_key = draw(PROTECTED_KEYS)
    # Allowed siblings share every container with the planted key.
    body: Any = {**draw(st.dictionaries(SAFE_KEYS, SIBLINGS, max_size=2)), protected_key: draw(SIBLINGS)}
    for kind, value in reversed(steps):
        if kind == "key":
            siblings = draw(st.dictionaries(SAFE_KEYS, SIBLINGS, max_size=2))
            body = {**siblings, value: body}
        else:
            before = draw(st.lists(SIBLINGS, min_size=value, max_size=value))
            after = draw(st.lists(SIBLINGS, max_size=2))
            body = [*before, body, *after]
    path = "".join(f".{value}" if kind == "key" else f"[{value}]" for kind, value in steps)
    path = f"{path}.{protected_key}".removeprefix(".")
    return body, path


@given(body_with_one_protected_key())
def test_a_protected_key_anywhere_is_flagged_with_its_path(case: tuple[Any, str]) -> None:
    body, path = case
    assert protected_paths(body) == [path]
