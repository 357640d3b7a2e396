"""Item sizes as DynamoDB counts them (chalicelib/adapters/dynamodb/sizes.py): the bulk writes cut their
transactions by them, so each rule is checked here against a size worked out by hand from AWS's
published rules, and a loan item against the same rules written out a second way."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from chalicelib.adapters.dynamodb.mapping import loan_to_item
from chalicelib.adapters.dynamodb.sizes import item_size, model_size, value_size
from chalicelib.domain.loan import Borrower, Loan, LoanStatus, initial_delinquency
from chalicelib.domain.schedule import generate_schedule


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ({"S": "abc"}, 3),
        ({"S": "\u20b9"}, 3),  # the rupee sign: three bytes in UTF-8
        ({"S": "\U0001f600"}, 4),
        ({"N": "7"}, 2),  # one significant digit: ceil(1 / 2) + 1
        ({"N": "123456"}, 4),
        ({"N": "1000000"}, 2),  # trailing zeroes are not significant
        ({"N": "-12.5"}, 3),
        ({"BOOL": True}, 1),
        ({"NULL": True}, 1),
        ({"B": b"\x00\x01\x02"}, 3),
        ({"M": {"ab": {"S": "xyz"}}}, 3 + (2 + 3 + 1)),
        ({"L": [{"S": "a"}, {"N": "10"}]}, 3 + (1 + 1) + (2 + 1)),
        ({"SS": ["a", "bc"]}, 3),
    ],
)
def test_each_kind_of_value_weighs_what_aws_s_rules_say(value: dict[str, Any], size: int) -> None:
    assert value_size(value) == size


def test_an_item_counts_its_attribute_names() -> None:
    assert item_size({"loan_id": {"S": "L-1"}, "dpd": {"N": "30"}}) == (7 + 3) + (3 + 2)
    assert item_size(None) == item_size({}) == 0


def _by_hand(value: dict[str, Any]) -> int:
    """The rules again, written apart from the product's: strings by their UTF-8 bytes, numbers as at
    most one byte for every two digits plus one (an upper bound: it counts trailing zeroes)."""
    ((kind, raw),) = value.items()
    if kind == "S":
        return len(raw.encode("utf-8"))
    if kind == "N":
        digits = len(raw.lstrip("-").replace(".", "").lstrip("0")) or 1
        return (digits + 1) // 2 + 1
    if kind == "M":
        return 3 + sum(len(k.encode("utf-8")) + 1 + _by_hand(v) for k, v in raw.items())
    if kind == "L":
        return 3 + sum(1 + _by_hand(v) for v in raw)
    return 1


def test_a_loan_item_weighs_what_its_attributes_add_up_to() -> None:
    schedule = tuple(generate_schedule(5_00_000_00, 1800, 36, dt.date(2025, 1, 1), dt.date(2025, 2, 1)))
    loan = Loan(
        loan_id="L-\u20b9-1",
        borrower=Borrower("\u0906\u0936\u093e \u0930\u093e\u0935", "9876543210", None, "12 MG Road"),
        status=LoanStatus.ACTIVE,
        principal_paise=5_00_000_00,
        disbursement_date=dt.date(2025, 1, 1),
        schedule=schedule,
        delinquency=initial_delinquency(schedule, dt.date(2025, 6, 1)),
        annual_rate_bps=1800,
        collector_id="col1",
        branch="Pune",
        created_at="2025-01-01T10:00:00.000+05:30",
        updated_at="2025-01-01T10:00:00.000+05:30",
    )
    item = loan_to_item(loan)
    wire = item.serialize()
    exact = model_size(item)
    bound = sum(len(name.encode("utf-8")) + _by_hand(value) for name, value in wire.items())
    assert exact == item_size(wire)
    assert exact <= bound < exact * 1.05
    assert exact > 1000  # the schedule is most of it
