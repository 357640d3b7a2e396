"""Financial guard: PATCH bodies naming a protected field are refused whole, audited and
counted, and the stored loan does not change by a single byte."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.integration.api_helpers import (
    AUDIT_KEYS,
    Api,
    Reply,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_error,
    emitted_metrics,
)

PROTECTED: dict[str, Any] = {
    "dpd": 0,
    "bucket": "CURRENT",
    "status": "CLOSED",
    "classification": "STANDARD",
    "principal_paise": 1,
    "schedule": [],
    "outstanding_principal_paise": 0,
    "overdue_paise": 0,
    "any_other_paise": 5,
    "npa_since": None,
    "legal": {"escalated": False},
    "dpd_as_of": "2026-03-14",
    "version": 99,
}
"""Every protected name with a value a client might try (``any_other_paise`` stands for
"any ``*_paise`` field"). The values hold no protected key of their own, so each body names exactly one."""

ALLOWED_PHONE = "9111111111"
ALLOWED_NOTES = "this note must not be saved"


def spellings(name: str) -> dict[str, str]:
    mixed = "".join(ch.upper() if i % 2 else ch for i, ch in enumerate(name))
    return {"lower": name.lower(), "UPPER": name.upper(), "Mixed": mixed}


def placements(key: str, value: Any, mixed: bool) -> dict[str, tuple[dict[str, Any], str]]:
    """Bodies naming ``key`` at top level, under borrower, and inside a list; with or without
    allowed fields beside it. Maps a label to (body, the path the guard must report)."""
    extra_borrower = {"phone": ALLOWED_PHONE} if mixed else {}
    extra_top = {"notes": ALLOWED_NOTES} if mixed else {}
    return {
        "top": ({**extra_top, key: value, **({"borrower": extra_borrower} if mixed else {})}, key),
        "borrower": ({**extra_top, "borrower": {**extra_borrower, key: value}}, f"borrower.{key}"),
        "list": (
            {**extra_top, "borrower": {**extra_borrower, "contacts": [{"kind": "alt"}, {key: value}]}},
            f"borrower.contacts[1].{key}",
        ),
    }


def guard_metric_namespaces(stdout: str) -> list[str]:
    found = []
    for line in stdout.splitlines():
        if line.startswith("{") and "FinancialGuardTriggered" in line:
            doc = json.loads(line)
            assert doc["FinancialGuardTriggered"] in (1, 1.0, [1.0], [1])
            found += [d["Namespace"] for d in doc["_aws"]["CloudWatchMetrics"]]
    return found


def assert_refusal(api: Api, capsys: pytest.CaptureFixture[str], reply: Reply, paths: list[str], label: str) -> None:
    """The 403 itself and exactly one ``FinancialGuardTriggered`` metric for this request."""
    details = assert_error(reply, 403, "FINANCIAL_FIELD_PROTECTED")
    assert details == {"fields": paths}, label
    out = capsys.readouterr().out
    assert emitted_metrics(out).count("FinancialGuardTriggered") == 1, label
    assert guard_metric_namespaces(out) == [f"LoanCRM/{api.stage}"], label


def assert_denied_entry(
    entry: dict[str, Any], loan_id: str, body: Any, paths: list[str], actor: tuple[str, str], label: str
) -> None:
    assert set(entry) == AUDIT_KEYS, label
    assert entry["action"] == "FINANCIAL_GUARD_BLOCKED", label
    assert entry["outcome"] == "DENIED", label
    assert entry["entity_type"] == "loan" and entry["entity_id"] == loan_id, label
    assert entry["after"] == body, label
    assert entry["before"] is None, label
    assert entry["actor"] == {"sub": actor[0], "role": actor[1]}, label
    assert entry["source_ip"] == "127.0.0.1", label
    assert all(path in entry["reason"] for path in paths), (label, entry["reason"])


def assert_refused_and_recorded(
    api: Api,
    capsys: pytest.CaptureFixture[str],
    reply: Reply,
    loan_id: str,
    body: Any,
    paths: list[str],
    actor: tuple[str, str],
    label: str,
) -> None:
    assert_refusal(api, capsys, reply, paths, label)
    entries = [e for e in api.audit(entity_id=loan_id) if e["request_id"] == reply.header("X-Request-Id")]
    assert len(entries) == 1, label
    assert_denied_entry(entries[0], loan_id, body, paths, actor, label)


@pytest.mark.parametrize("case", ["lower", "UPPER", "Mixed"])
def test_every_protected_field_is_refused_in_any_case_place_and_company(
    api: Api, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    loan = api.create_loan(collector_id="collector1", notes="original note")
    loan_id = loan["loan_id"]
    stored = api.raw_loan(loan_id)
    assert stored is not None
    capsys.readouterr()

    attempts: dict[str, tuple[Any, str, str]] = {}
    for field, value in PROTECTED.items():
        key = spellings(field)[case]
        for mixed in (False, True):
            for place, (body, path) in placements(key, value, mixed).items():
                label = f"{field}/{case}/{place}/{'mixed' if mixed else 'alone'}: {body}"
                reply = api.patch(f"/api/v1/loans/{loan_id}", body, as_="manager")
                assert_refusal(api, capsys, reply, [path], label)
                request_id = reply.header("X-Request-Id")
                assert request_id and request_id not in attempts
                attempts[request_id] = (body, path, label)
    assert len(attempts) == len(PROTECTED) * 2 * 3

    # Byte for byte: not the financial fields, not the allowed fields that rode along, not the version.
    assert api.raw_loan(loan_id) == stored
    after = api.loan(loan_id)
    assert after["borrower"]["phone"] == loan["borrower"]["phone"] != ALLOWED_PHONE
    assert after["notes"] == "original note"
    assert after == loan

    entries = api.audit(entity_id=loan_id)
    denied = {e["request_id"]: e for e in entries if e["action"] == "FINANCIAL_GUARD_BLOCKED"}
    assert set(denied) == set(attempts)
    for request_id, (body, path, label) in attempts.items():
        assert_denied_entry(denied[request_id], loan_id, body, [path], ("manager1", "manager"), label)
    assert [e["action"] for e in entries if e["request_id"] not in denied] == ["LOAN_CREATED"]


def test_every_offending_path_is_reported_whatever_the_spelling(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    loan_id = api.create_loan()["loan_id"]
    stored = api.raw_loan(loan_id)
    capsys.readouterr()
    body = {
        "notes": "ok",
        "DPD": 0,
        "borrower": {"phone": ALLOWED_PHONE, "Bucket": "CURRENT", "history": [{"overdue_paise": 0}]},
        "Legal": {"escalated_on": None},
    }
    reply = api.patch(f"/api/v1/loans/{loan_id}", body)
    paths = ["DPD", "borrower.Bucket", "borrower.history[0].overdue_paise", "Legal"]
    assert_refused_and_recorded(api, capsys, reply, loan_id, body, paths, ("admin1", "admin"), "multi")
    assert api.raw_loan(loan_id) == stored

    # Separator and camel-case spellings are the same fields.
    for key in ("dpdAsOf", "DPD-AS-OF", "Principal Paise", "overduePaise", "NPA_Since"):
        body = {"borrower": {key: "x"}}
        reply = api.patch(f"/api/v1/loans/{loan_id}", body)
        assert_refused_and_recorded(api, capsys, reply, loan_id, body, [f"borrower.{key}"], ("admin1", "admin"), key)
    assert api.raw_loan(loan_id) == stored


def test_collectors_and_auditors_get_the_same_403_and_are_audited(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    mine = api.create_loan(collector_id="collector1")["loan_id"]
    not_mine = api.create_loan(collector_id="collector2")["loan_id"]
    stored = {loan_id: api.raw_loan(loan_id) for loan_id in (mine, not_mine)}
    capsys.readouterr()

    for alias, username, role, loan_id in (
        ("collector", "collector1", "collector", mine),
        ("collector", "collector1", "collector", not_mine),
        ("auditor", "auditor1", "auditor", mine),
    ):
        body = {"borrower": {"phone": ALLOWED_PHONE}, "DPD": 0}
        reply = api.patch(f"/api/v1/loans/{loan_id}", body, as_=alias)
        assert_refused_and_recorded(api, capsys, reply, loan_id, body, ["DPD"], (username, role), alias)
    assert {loan_id: api.raw_loan(loan_id) for loan_id in stored} == stored


def test_guard_on_a_loan_that_does_not_exist_is_still_403(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    """Decision: the guard judges the body before the loan is looked up, so an unknown id answers
    exactly like a real one (403, not 404) and the attempt is still audited under the id that was
    tried. Answering 404 would let anyone holding a token probe which loan ids exist, and an attempt to
    rewrite money fields deserves an audit entry whether or not the target exists."""
    api.create_loan(loan_id="LN-REAL")
    capsys.readouterr()
    body = {"dpd": 0}
    real = api.patch("/api/v1/loans/LN-REAL", body, as_="collector")
    assert_refused_and_recorded(api, capsys, real, "LN-REAL", body, ["dpd"], ("collector1", "collector"), "real")
    ghost = api.patch("/api/v1/loans/LN-GHOST", body, as_="collector")
    assert_refused_and_recorded(api, capsys, ghost, "LN-GHOST", body, ["dpd"], ("collector1", "collector"), "ghost")
    assert ghost.json == real.json
    assert api.raw_loan("LN-GHOST") is None


def test_top_level_array_naming_a_protected_field_is_guarded(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    """The guard covers "any letter case or nesting": an array body naming ``dpd`` is an attempt on dpd
    too, so it is refused as one (403, audited, counted), not just rejected as a malformed body."""
    loan_id = api.create_loan()["loan_id"]
    stored = api.raw_loan(loan_id)
    capsys.readouterr()
    body = [{"notes": "x"}, {"Dpd": 0}]
    reply = api.patch(f"/api/v1/loans/{loan_id}", body)
    assert_refused_and_recorded(api, capsys, reply, loan_id, body, ["[1].Dpd"], ("admin1", "admin"), "array")
    assert api.raw_loan(loan_id) == stored
    # An array without protected names is still just a malformed body.
    assert_error(api.patch(f"/api/v1/loans/{loan_id}", [{"notes": "x"}]), 400, "VALIDATION_ERROR")


def test_what_the_guard_leaves_alone(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    """Protected words inside values are ordinary text (only keys are fields); an unauthenticated
    attempt is a plain 401."""
    loan_id = api.create_loan()["loan_id"]
    capsys.readouterr()
    reply = api.patch(f"/api/v1/loans/{loan_id}", {"notes": "asked about dpd, bucket and principal_paise"})
    assert reply.status == 200, reply.body
    assert reply.json["notes"] == "asked about dpd, bucket and principal_paise"
    assert "FinancialGuardTriggered" not in emitted_metrics(capsys.readouterr().out)

    # Without a token there is no one to audit: 401, and nothing changes.
    stored = api.raw_loan(loan_id)
    assert_error(api.patch(f"/api/v1/loans/{loan_id}", {"dpd": 0}, as_=None), 401, "UNAUTHENTICATED")
    assert api.raw_loan(loan_id) == stored
    assert [e["action"] for e in api.audit(entity_id=loan_id)] == ["LOAN_UPDATED", "LOAN_CREATED"]
