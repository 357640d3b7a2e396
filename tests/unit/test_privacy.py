"""The masks and the log safety net (docs/logging.md): what a log line may say about a borrower, and that
no token, password or secret gets through whatever a call site passed."""

from __future__ import annotations

import io
import json
import logging
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.adapters.logging import RedactingFormatter, log_context
from chalicelib.domain.loan import Borrower
from chalicelib.domain.privacy import REDACTED, mask_email, mask_name, mask_phone, scrub, scrub_text

# --- the masks --------------------------------------------------------------------------------------


def test_masks_keep_just_enough_to_tell_borrowers_apart() -> None:
    assert mask_phone("+91 98765 43210") == "********3210"
    assert mask_phone("9876543210") == "******3210"
    assert mask_email("asha.rao@example.in") == "a***@example.in"
    assert mask_email("not an address") == REDACTED
    assert mask_name("Asha  Rao") == "A*** R***"
    assert mask_name("") == ""


@given(st.text(max_size=40))
def test_masks_change_nothing_the_second_time(text: str) -> None:
    assert mask_name(mask_name(text)) == mask_name(text)
    email = f"{text}@example.in"
    assert mask_email(mask_email(email)) == mask_email(email)


# --- the safety net on text -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("call 9876543210 now", "9876543210"),
        ("phone=+919876543210", "9876543210"),
        ("'+91 98765 43210'", "98765 43210"),
        ("(0091-9876543210)", "9876543210"),
        ("09876543210,", "9876543210"),
        ("98765-43210", "98765-43210"),
        ("phone_9876543210", "9876543210"),
        ("mail asha.rao+x@mail.example.co.in please", "asha.rao+x@"),
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbjEifQ.c2lnbmF0dXJl", "eyJzdWIiOiJhZG1pbjEifQ"),
        ('body {"username": "a", "password": "hunter 2"}', "hunter 2"),
        ("https://x/?token=s3cr3t&x=1", "s3cr3t"),
        ("JWT_SECRET='long secret value'", "long secret value"),
    ],
)
def test_text_loses_what_has_a_recognisable_shape(text: str, gone: str) -> None:
    assert gone not in scrub_text(text)


@pytest.mark.parametrize(
    "kept",
    [
        "01KKR2ZXH882XNKMEFFZ5BGHN2",  # a ULID (run id, audit id)
        "SBIN0123456789",  # a UTR glued to its bank code
        "LN-000123",
        "1796328568676",  # epoch milliseconds
        "amount_paise=10000000",
        "2026-03-14",
        "/api/v1/loans/{loan_id}",
        "missing bearer token",
    ],
)
def test_ids_dates_and_amounts_stay_readable(kept: str) -> None:
    assert scrub_text(kept) == kept


# --- the safety net on structures -------------------------------------------------------------------


def test_keys_say_what_is_secret_or_personal_at_any_depth() -> None:
    payload = {
        "Password": "hunter2",
        "nested": [{"new_password": 1234, "access_token": None, "X-Authorization": ["Bearer q"]}],
        "JWT_SECRET": {"value": "x"},
        "borrower": {"name": "Asha Rao", "phone": 9876543210, "email": "asha@example.in", "address": {"city": "Pune"}},
        "borrower_name": "Ravi Kumar",
        "name": "chalicelib.services.day_end",
        "phone": "********3210",
        "loan_id": "LN-1",
    }
    assert scrub(payload) == {
        "Password": REDACTED,
        "nested": [{"new_password": REDACTED, "access_token": None, "X-Authorization": REDACTED}],
        "JWT_SECRET": REDACTED,
        "borrower": {"name": "A*** R***", "phone": "******3210", "email": "a***@example.in", "address": REDACTED},
        "borrower_name": "R*** K***",
        "name": "chalicelib.services.day_end",
        "phone": "********3210",
        "loan_id": "LN-1",
    }


def test_an_object_logged_by_mistake_is_written_masked() -> None:
    borrower = Borrower(name="Asha Rao", phone="9876543210", email="asha@example.in")
    written = json.dumps(scrub({"oops": borrower, "when": (1, 2.5, True)}))
    assert "9876543210" not in written and "asha@example.in" not in written
    assert json.loads(written)["when"] == [1, 2.5, True]


def test_a_cycle_ends() -> None:
    loop: dict[str, Any] = {"phone": "9876543210"}
    loop["self"] = loop
    assert "9876543210" not in json.dumps(scrub(loop))


# --- properties -------------------------------------------------------------------------------------

SEPARATORS = st.sampled_from([" ", ": ", "=", ",", ";", '"', "'", "(", ")", "[", "/", "|", "\n", "\t", "_", "<"])
TEXT = st.text(alphabet=string.ascii_letters + string.digits + " .,:-+@", max_size=20)


@st.composite
def phones(draw: st.DrawFn) -> tuple[str, str]:
    """(the ten digits, the number as someone wrote it)."""
    digits = draw(st.sampled_from("6789")) + draw(st.text(alphabet=string.digits, min_size=9, max_size=9))
    prefix = draw(st.sampled_from(["", "+91", "+91 ", "+91-", "91", "0091", "0"]))
    split = draw(st.sampled_from(["", " ", "-"]))
    return digits, f"{prefix}{digits[:5]}{split}{digits[5:]}"


def embedded(draw: st.DrawFn, secret: str) -> Any:
    """``secret`` inside some text, itself perhaps inside objects and arrays under harmless keys."""
    text = draw(TEXT) + draw(SEPARATORS) + secret + draw(SEPARATORS) + draw(TEXT)
    value: Any = text
    for key in draw(st.lists(st.sampled_from(["message", "detail", "error", "items", "x"]), max_size=3)):
        value = {key: value} if draw(st.booleans()) else [value, 1]
    return value


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_no_phone_number_survives_in_any_shape_or_place(data: st.DataObject) -> None:
    digits, written = data.draw(phones())
    payload = embedded(data.draw, written)
    assert digits not in json.dumps(scrub(payload))


@settings(max_examples=200, deadline=None)
@given(
    st.data(),
    st.text(alphabet=string.ascii_lowercase + string.digits + "._+-", min_size=2, max_size=12),
    st.lists(st.text(alphabet=string.ascii_lowercase + string.digits, min_size=1, max_size=8), min_size=2, max_size=3),
)
def test_no_email_address_survives(data: st.DataObject, local: str, labels: list[str]) -> None:
    address = f"{local}@{'.'.join(labels)}"
    assert address not in json.dumps(scrub(embedded(data.draw, address)))


@settings(max_examples=200, deadline=None)
@given(
    st.data(),
    st.lists(st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=4), min_size=3, max_size=3),
)
def test_no_token_survives(data: st.DataObject, parts: list[str]) -> None:
    token = "eyJ" + ".".join(parts)
    assert token not in json.dumps(scrub(embedded(data.draw, token)))


@settings(max_examples=200, deadline=None)
@given(
    st.data(),
    st.sampled_from(["Bearer", "bearer", "Basic"]),
    st.text(alphabet=string.ascii_letters + string.digits + "._~+/=-", min_size=8, max_size=40),
)
def test_no_authorization_value_survives(data: st.DataObject, scheme: str, credential: str) -> None:
    value = f"{scheme} {credential}"
    assert value not in json.dumps(scrub(embedded(data.draw, value)))


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["password", "new_password", "Authorization", "jwt_secret", "access_token", "API_KEY", "Cookie"]),
    st.text(min_size=1, max_size=30) | st.integers() | st.lists(st.text(max_size=5)),
    st.lists(st.sampled_from(["a", "body", "items"]), max_size=3),
)
def test_a_secret_keys_value_is_never_written(key: str, secret: Any, path: list[str]) -> None:
    payload: Any = {key: secret}
    for name in path:
        payload = {name: [payload]}
    cleaned = scrub(payload)
    for name in reversed(path):
        cleaned = cleaned[name][0]
    assert cleaned == {key: REDACTED}


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | TEXT, lambda inner: st.lists(inner) | st.dictionaries(TEXT, inner)
    )
)
def test_scrubbing_twice_changes_nothing_more(value: Any) -> None:
    once = scrub(value)
    assert scrub(once) == once


# --- the formatter ----------------------------------------------------------------------------------


def test_every_line_the_formatter_writes_is_scrubbed_exception_included() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter(service="loan-crm"))
    logger = logging.getLogger("tests.privacy")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with log_context(request_id="req-1", absent=None):
            logger.info("login by asha@example.in", extra={"password": "hunter2", "attempted": {"phone": "9876543210"}})
            try:
                raise ValueError("no loan for phone 9876543210 and token eyJa.eyJb.c")
            except ValueError:
                logger.exception("lookup failed")
        logger.info("after")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    written = stream.getvalue()
    for gone in ("asha@example.in", "hunter2", "9876543210", "eyJa.eyJb"):
        assert gone not in written
    assert [line["message"] for line in lines] == ["login by a***@example.in", "lookup failed", "after"]
    assert [line.get("request_id") for line in lines] == ["req-1", "req-1", None]
    assert "absent" not in lines[0]
    assert lines[0]["name"] == "tests.privacy" and lines[0]["service"] == "loan-crm"
    assert "ValueError" in lines[1]["exception"]


@pytest.mark.parametrize(
    "text",
    [
        "call 987 654 3210 today",  # written 3+3+4
        "GET /loans?phone=%2B919876543210",  # URL-encoded +91
        "GET /users?email=asha.rao%40example.in",  # URL-encoded @
    ],
)
def test_other_ways_of_writing_a_phone_or_an_email_are_masked(text: str) -> None:
    scrubbed = scrub_text(text)
    assert "9876543210" not in scrubbed and "987 654" not in scrubbed and "asha.rao" not in scrubbed


def test_a_phone_stored_as_a_number_and_an_api_key_header_are_not_written() -> None:
    scrubbed = scrub({"contact": 9876543210, "x-api-key": "k3y-value", "amount_paise": 123_456, "loans": 42})
    assert scrubbed["contact"] != 9876543210 and "9876543210" not in str(scrubbed["contact"])
    assert scrubbed["x-api-key"] == REDACTED
    assert scrubbed["amount_paise"] == 123_456 and scrubbed["loans"] == 42  # other numbers are kept
