"""Failures that must reach an alarm (infra/template.json) are counted, not only logged."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.domain.errors import Unavailable
from chalicelib.wiring import services
from tests.integration.api_helpers import Api, api_fixture, emitted_metrics  # noqa: F401

TODAY = "2026-03-15"
"""The IST date of api_helpers.FROZEN_AT."""


@pytest.mark.parametrize(
    ("error", "status", "also"),
    [(RuntimeError("boom"), 500, None), (Unavailable("db down"), 503, "DependencyUnavailable")],
)
def test_payment_breakage_is_counted_for_the_alarms(
    api: Api,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    status: int,
    also: str | None,
) -> None:
    loan = api.create_loan()

    def broken(*_args: Any) -> Any:
        raise error

    monkeypatch.setattr(services().payments.payments, "post", broken)
    capsys.readouterr()
    body = {
        "loan_id": loan["loan_id"],
        "utr": "UTRMETRIC01",
        "amount_paise": 10_000,
        "payment_date": TODAY,
        "mode": "UPI",
    }
    reply = api.post("/api/v1/payments", body)
    assert reply.status == status
    names = emitted_metrics(capsys.readouterr().out)
    assert names.count("PaymentFailed") == 1
    assert "PaymentRejected" not in names
    if also:
        assert names.count(also) == 1
