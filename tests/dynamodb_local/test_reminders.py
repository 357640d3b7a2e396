"""Borrower reminders on DynamoDB Local, the real engine (docs/reminders.md).

tests/integration/test_reminders.py proves the rules end to end on moto. Here the same services run
against Amazon's own engine, where the sparse ``due-index``/``arrears-index`` queries, the conditional
puts and the outbox index behave as they will in AWS, on frozen IST clocks:

- **the walk**: a small book taken through the day-end runs for 1 to 12 April (the 10th skipped). After
  each run exactly the reminders the table in this file names (worked out by hand from the due dates)
  are new, each stored once, with the run's ``business_date`` and the ``send_after`` the contact window
  gives; late and catch-up runs, a rerun, a full scan and a superseded date add what docs/reminders.md
  says and nothing more. A watch run makes about 150 DynamoDB calls whatever the book (a query for
  each of the 7 x 16 reminder segments and the watch and pending shards), so the walk is a dozen dates
  chosen so that every kind falls in it, rather than a month and more;
- **crash and resume**: the k-th put on the ``reminders`` table fails (never sent, or sent and its answer
  lost). A failure while a date segment queues inline only counts; one in a reminder segment fails the
  run, which the next invocation takes over. Either way the table ends exactly as after a clean run;
- **senders racing**: four processes released together send the same morning's queue, including
  attempts orphaned by a sender that died. Each reminder is published by exactly one of them.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import functools
import json
import os
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

from chalicelib.adapters.dynamodb.models import ReminderModel
from chalicelib.adapters.dynamodb.reminders import DynamoReminderStore
from chalicelib.clock import IST, FixedClock, use_clock
from chalicelib.domain.audit import Actor
from chalicelib.domain.errors import Unavailable
from chalicelib.domain.loan import Borrower
from chalicelib.domain.payment import PaymentMode
from chalicelib.domain.reminders import Reminder, ReminderKind, claimed
from chalicelib.domain.runs import RunOutcome, RunRecord, RunStatus, SegmentKind
from chalicelib.services.context import RequestContext
from chalicelib.services.day_end import RunResult
from chalicelib.services.loans import GeneratedTerms, NewLoan
from chalicelib.services.payments import NewPayment
from chalicelib.wiring import services
from infra.provision import parameter_specs, topic_specs
from tests.dynamodb_local import processes
from tests.dynamodb_local.faults import Fault, hooked

pytestmark = pytest.mark.dynamodb_local

SETUP = RequestContext(actor=Actor("setup", "admin"))
UNAVAILABLE = "UNAVAILABLE: the database is not answering; nothing was changed, try again"
Key = tuple[str, str, int]
"""(loan id, kind, seq): what a reminder is about, and what is stored once."""
Items = dict[tuple[str, ...], dict[str, Any]]


def ist(text: str) -> dt.datetime:
    """``"2026-04-02 00:30"`` as an IST instant."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=IST)


def create_loan(loan_id: str, dues: list[dt.date], monthly: bool = False) -> None:
    """A loan of ₹1,20,000 created through the loan service: 12 monthly instalments from ``dues[0]``
    (``monthly``), or one imported instalment per date in ``dues``."""
    principal = 12_000_000
    rows = None
    if not monthly:
        share = principal // len(dues)
        rows = [(due, share + (principal - share * len(dues) if n == 0 else 0), 50_000) for n, due in enumerate(dues)]
    services().loans.create(
        SETUP,
        NewLoan(
            loan_id=loan_id,
            borrower=Borrower(f"Borrower {loan_id}", "9876543210"),
            principal_paise=principal,
            disbursement_date=dues[0] - dt.timedelta(days=35),
            terms=GeneratedTerms(1800, 12, dues[0]) if monthly else None,
            imported_schedule=rows,
            branch="BLR",
        ),
    )


def run(date: dt.date, at: dt.datetime, full_scan: bool = False) -> RunResult:
    """The day-end run for ``date``, made at ``at``: driven through the wired service, no time limit."""
    with use_clock(FixedClock(at)):
        return services().dpd_job.run(date, trigger="test", full_scan=full_scan)


def listed(loan_ids: list[str]) -> dict[Key, dict[str, Any]]:
    """Every stored reminder of these loans, as the per-loan listing shows it."""
    found: dict[Key, dict[str, Any]] = {}
    for loan_id in loan_ids:
        for item in services().reminders.for_loan(loan_id):
            key = (loan_id, item["kind"], item["seq"])
            assert key not in found, f"{key} stored twice"
            found[key] = item
    return found


def inline_count(record: RunRecord) -> int:
    """Reminders the run queued while its date (and pending) segments had the loans in hand."""
    return sum(s.reminders for seg, s in record.segments.items() if seg.anchor is None)


def metrics(stdout: str) -> collections.Counter[str]:
    """How many times each EMF metric was emitted (powertools prints one JSON document per line)."""
    names: collections.Counter[str] = collections.Counter()
    for line in stdout.splitlines():
        if line.startswith('{"_aws"'):
            for directive in json.loads(line)["_aws"]["CloudWatchMetrics"]:
                names.update(m["Name"] for m in directive["Metrics"])
    return names


# ------------------------------------------------------------------------------------------- tables


def ddb() -> Any:
    return _client(os.environ["AWS_ENDPOINT_URL_DYNAMODB"])


@functools.cache
def _client(endpoint: str) -> Any:
    return boto3.client("dynamodb", endpoint_url=endpoint)


_KEYS: dict[str, list[str]] = {}


def key_names(table: str) -> list[str]:
    if table not in _KEYS:
        _KEYS[table] = [k["AttributeName"] for k in ddb().describe_table(TableName=table)["Table"]["KeySchema"]]
    return _KEYS[table]


def scan(table: str) -> Items:
    """Every item of ``table``, raw, by its key."""
    names = key_names(table)
    items: Items = {}
    for page in ddb().get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page["Items"]:
            items[tuple(json.dumps(item[k], sort_keys=True) for k in names)] = item
    return items


def stage_tables(stage: str) -> list[str]:
    prefix = f"loan-crm-{stage}-"
    return [
        name
        for page in ddb().get_paginator("list_tables").paginate()
        for name in page["TableNames"]
        if name.startswith(prefix)
    ]


def save(stage: str) -> dict[str, Items]:
    return {table: scan(table) for table in stage_tables(stage)}


def restore(saved: dict[str, Items]) -> None:
    """Put every table back exactly as saved: delete what was added, rewrite what changed."""
    client = ddb()
    for table, items in saved.items():
        current = scan(table)
        names = key_names(table)
        requests: list[dict[str, Any]] = [
            {"DeleteRequest": {"Key": {k: item[k] for k in names}}} for key, item in current.items() if key not in items
        ]
        requests += [{"PutRequest": {"Item": item}} for key, item in items.items() if current.get(key) != item]
        for start in range(0, len(requests), 25):
            pending: dict[str, Any] = {table: requests[start : start + 25]}
            while pending:
                pending = client.batch_write_item(RequestItems=pending).get("UnprocessedItems") or {}


# ------------------------------------------------------------------------------------------- the walk

WALK_BUILT_AT = ist("2026-03-30 10:00")
"""The book is created on 30 March, so it shows its delinquency as of the 29th; no run has completed."""


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(f"2026-{text}")


WALK_BOOK: dict[str, tuple[list[dt.date], bool]] = {
    # loan id: due dates (monthly: 12 from the first), nothing paid unless said
    "due-0308": ([d("03-08")], True),  # dpd 25 on 1 Apr: OVERDUE_30 on 6 Apr, then crosses 31 on 7 Apr
    "due-0320": ([d("03-20")], True),  # dpd 13 on 1 Apr: OVERDUE_15 on 3 Apr
    "due-0401": ([d("04-01")], True),
    "due-0405": ([d("04-05")], True),
    "paid-0406": ([d("04-06")], True),  # instalment 1 paid on 4 Apr, before it falls due
    "close-0410": ([d("04-10"), d("04-11"), d("05-11")], False),  # two instalments one day apart
    "due-0412": ([d("04-12")], True),
    "due-0413": ([d("04-13")], True),
    "quiet-0615": ([d("06-15")], True),  # owed nothing in the walk
}
PAYMENT = ("paid-0406", ist("2026-04-04 11:00"))
"""Made after the run for 3 April (00:30 on the 4th) and before the run for 4 April."""


@dataclasses.dataclass(frozen=True)
class Step:
    date: str
    made_at: str
    send_after: str
    new: frozenset[tuple[str, str, int, str]]
    """(loan, kind, seq, due date) of every reminder the run adds."""
    full_scan: bool = False


def step(date: str, made_at: str, send_after: str, *new: tuple[str, str, int, str], full_scan: bool = False) -> Step:
    return Step(date, made_at, send_after, frozenset(new), full_scan)


WALK = [
    # By hand from the due dates: PRE_DUE_3 when an unpaid instalment falls due 3 days after the date,
    # PRE_DUE_1 1 day after, OVERDUE_n when the oldest unpaid one makes the loan's dpd exactly n
    # (dpd on D = D - due date + 1). The first run has no completed run before it: a scan.
    step("04-01", "04-02 00:30", "04-02 08:00", ("due-0401", "OVERDUE_1", 1, "04-01")),
    step("04-02", "04-03 00:30", "04-03 08:00", ("due-0405", "PRE_DUE_3", 1, "04-05")),
    step(
        "04-03",
        "04-04 00:30",
        "04-04 08:00",
        ("due-0320", "OVERDUE_15", 1, "03-20"),
        ("paid-0406", "PRE_DUE_3", 1, "04-06"),
    ),
    # (paid-0406 pays its first instalment here: no PRE_DUE_1 on 5 Apr, no OVERDUE_1 on 6 Apr.)
    step("04-04", "04-05 00:30", "04-05 08:00", ("due-0405", "PRE_DUE_1", 1, "04-05")),
    step(
        "04-05",
        "04-06 00:30",
        "04-06 08:00",
        ("due-0405", "OVERDUE_1", 1, "04-05"),  # read inline: its instalment falls due
        ("due-0308", "PRE_DUE_3", 2, "04-08"),  # found on the due-index (D+3)
    ),
    step("04-06", "04-07 00:30", "04-07 08:00", ("due-0308", "OVERDUE_30", 1, "03-08")),
    step(
        "04-07",
        "04-08 00:30",
        "04-08 08:00",
        ("due-0308", "PRE_DUE_1", 2, "04-08"),  # read inline: crosses dpd 31 the same day
        ("due-0401", "OVERDUE_7", 1, "04-01"),
        ("close-0410", "PRE_DUE_3", 1, "04-10"),
    ),
    # The D+2 partition: close-0410's due_key names 10 Apr, its instalment 2 is due on the 11th.
    step("04-08", "04-09 00:30", "04-09 08:00", ("close-0410", "PRE_DUE_3", 2, "04-11")),
    # Late, on the evening of the 10th: inside the window, so send_after is the run's own instant.
    step(
        "04-09",
        "04-10 18:55",
        "04-10 18:55",
        ("close-0410", "PRE_DUE_1", 1, "04-10"),
        ("due-0412", "PRE_DUE_3", 1, "04-12"),
    ),
    # 10 April is not run. The catch-up for the 11th, made after 19:00 on the 12th, covers it but
    # queues only the 11th's reminders, for 08:00 the next morning.
    step(
        "04-11",
        "04-12 19:05",
        "04-13 08:00",
        ("due-0412", "PRE_DUE_1", 1, "04-12"),
        ("due-0405", "OVERDUE_7", 1, "04-05"),
    ),
]
LOST_ON_0410 = {("close-0410", "OVERDUE_1", 1), ("close-0410", "PRE_DUE_1", 2), ("due-0413", "PRE_DUE_3", 1)}
"""What the run for 10 April would have queued: never queued, not even by the catch-up that covered it."""
LAST = step(
    "04-12",
    "04-13 00:30",
    "04-13 08:00",
    ("due-0412", "OVERDUE_1", 1, "04-12"),
    ("due-0413", "PRE_DUE_1", 1, "04-13"),
    full_scan=True,
)


STABLE = ("kind", "seq", "due_date", "business_date", "send_after")


def iso(text: str) -> str:
    """``"04-02 08:00"`` as the listing shows an IST instant."""
    return ist(f"2026-{text}").isoformat(timespec="seconds")


def _walk_step(s: Step, before: dict[Key, dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    date = d(s.date)
    result = run(date, ist(f"2026-{s.made_at}"), full_scan=s.full_scan)
    assert result.outcome is RunOutcome.COMPLETED, (s.date, result)
    assert result.record is not None
    now = listed(list(WALK_BOOK))
    new = {key: item for key, item in now.items() if key not in before}
    assert {(*key, item["due_date"][5:]) for key, item in new.items()} == set(s.new), s.date
    assert result.record.reminders_queued == len(s.new), f"{s.date}: the run's count of what it queued"
    in_window = "08:00" <= s.made_at[-5:] < "19:00"
    for key, item in new.items():
        assert item["business_date"] == date.isoformat(), key
        assert item["send_after"] == iso(s.send_after), key
        # A run that ends inside the window sends at once (the post-run send); otherwise they wait.
        assert (item["status"], item["attempts"]) == (("SENT", 1) if in_window else ("QUEUED", 0)), key
    for key, item in before.items():  # queued once: a later run never writes them again
        if in_window:  # the post-run send moved the earlier ones on (sent or cancelled)
            assert {f: now[key][f] for f in STABLE} == {f: item[f] for f in STABLE}, (s.date, key)
        else:
            assert now[key] == item, (s.date, key)
    return now


def test_a_walk_through_due_dates_queues_each_reminder_once_on_its_day(local_stack: str) -> None:
    """docs/reminders.md, "What is queued, and when" (each kind on its exact day, once per loan, kind and
    instalment; payments made before the run count), "How the run finds them" (loans read inline, and the
    rest through the due-index and arrears-index, D+2 included; catch-up, superseded and full-scan runs)
    and "When they go out" (send_after at 00:30, 18:55 and 19:05; a run ending inside the window sends at
    once)."""
    with use_clock(FixedClock(WALK_BUILT_AT)):
        for loan_id, (dues, monthly) in WALK_BOOK.items():
            create_loan(loan_id, dues, monthly)
    kinds = {kind for s in [*WALK, LAST] for (_, kind, _, _) in s.new}
    assert kinds == set(ReminderKind), "the walk names every kind"

    seen: dict[Key, dict[str, Any]] = {}
    for s in WALK:
        if s.date == "04-04":
            loan_id, at = PAYMENT
            with use_clock(FixedClock(at)):
                loan = services().loans.stored(SETUP, loan_id)
                paid = services().payments.post(
                    SETUP,
                    NewPayment(loan_id, "UTRWALK000001", loan.schedule[0].due_paise, at.date(), PaymentMode.UPI),
                )
            assert paid.loan.schedule[0].unpaid_paise == 0 and paid.loan.schedule[1].unpaid_paise > 0
        seen = _walk_step(s, seen)
        record = services().runs.get(d(s.date))
        assert record is not None
        reminder_segments = [seg for seg in record.segments if seg.anchor is not None]
        if s.date == "04-01":
            assert record.mode == "scan" and not reminder_segments
        else:  # 3 due-index days and 4 arrears-index days, 16 shards each
            assert record.mode == "watch" and len(reminder_segments) == 7 * 16
    assert not LOST_ON_0410 & seen.keys(), "a date covered by a catch-up gets none of its own reminders"

    # A completed date again, plain or as a full scan: ALREADY_COMPLETED, nothing added.
    late = ist("2026-04-12 21:00")
    for full_scan in (False, True):
        assert run(d("04-11"), late, full_scan).outcome is RunOutcome.ALREADY_COMPLETED
        assert listed(list(WALK_BOOK)) == seen
    # The skipped date, now older than a completed one: superseded, plans and queues nothing.
    superseded = run(d("04-10"), late, full_scan=True)
    assert superseded.outcome is RunOutcome.COMPLETED
    assert superseded.record is not None and superseded.record.mode == "superseded"
    assert not superseded.record.segments
    assert listed(list(WALK_BOOK)) == seen
    # A full scan of the next date checks every ACTIVE loan inline and finds the same as the indexes would.
    seen = _walk_step(LAST, seen)
    record = services().runs.get(d(LAST.date))
    assert record is not None and record.mode == "scan"
    assert all(seg.kind is SegmentKind.SCAN for seg in record.segments)
    expected = {(loan, kind, seq) for s in [*WALK, LAST] for (loan, kind, seq, _) in s.new}
    assert set(seen) == expected


# ---------------------------------------------------------------------------------------- crash, resume

CRASH_DATE = dt.date(2026, 6, 10)


def c(days: int) -> dt.date:
    return CRASH_DATE + dt.timedelta(days=days)


CRASH_BOOK: dict[str, tuple[list[dt.date], bool]] = {
    # Read by the run's date segment (an instalment falls due on the date): queued inline.
    "multi": ([c(0), c(1), c(3), c(40)], False),  # OVERDUE_1#1, PRE_DUE_1#2 and PRE_DUE_3#3 in one go
    "today-a": ([c(0)], True),
    "today-b": ([c(0)], True),
    # Delinquency unchanged on the date: only the reminder segments find them.
    "ahead1-a": ([c(1)], True),
    "ahead1-b": ([c(1)], True),
    "ahead3-a": ([c(3)], True),
    "ahead3-b": ([c(3)], True),
    "ahead23": ([c(2), c(3), c(40)], False),  # found on the D+2 partition, owed PRE_DUE_3#2
    "dpd7": ([c(-6)], True),
    "dpd15": ([c(-14)], True),
    "dpd30": ([c(-29)], True),
    "quiet": ([c(20)], True),
}
CRASH_OWED = {
    ("multi", "OVERDUE_1", 1),
    ("multi", "PRE_DUE_1", 2),
    ("multi", "PRE_DUE_3", 3),
    ("today-a", "OVERDUE_1", 1),
    ("today-b", "OVERDUE_1", 1),
    ("ahead1-a", "PRE_DUE_1", 1),
    ("ahead1-b", "PRE_DUE_1", 1),
    ("ahead3-a", "PRE_DUE_3", 1),
    ("ahead3-b", "PRE_DUE_3", 1),
    ("ahead23", "PRE_DUE_3", 2),
    ("dpd7", "OVERDUE_7", 1),
    ("dpd15", "OVERDUE_15", 1),
    ("dpd30", "OVERDUE_30", 1),
}
"""By hand: what the run for ``CRASH_DATE`` queues."""
INLINE = 5
"""Of those, queued by the date segment: multi's three and the two loans falling due."""
CRASH_RUN_AT = ist("2026-06-11 00:30")


def never_sent() -> Exception:
    """The put never reaches DynamoDB."""
    error: Exception = EndpointConnectionError(endpoint_url="http://dynamodb")
    return error


def answer_lost() -> Exception:
    """The put is stored; its answer never arrives."""
    error: Exception = ReadTimeoutError(endpoint_url="http://dynamodb")
    return error


class OnTable:
    """Hand ``fault`` only the calls that touch ``table``. Every model's connection shares one botocore
    client, so a hook on the reminders model also sees, for one, the job's batched reads of loans."""

    def __init__(self, table: str, fault: Fault) -> None:
        self.table = table
        self.fault = fault

    def mark(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["on_table"] = params.get("TableName") == self.table or self.table in params.get("RequestItems", {})

    def __call__(self, context: dict[str, Any], **kwargs: Any) -> None:
        if context.get("on_table"):
            self.fault(**kwargs)


def spread(total: int, inline: int) -> list[int]:
    """The first put, the last one made inline and the first one made by a reminder segment, the middle
    of those, the last."""
    return sorted({1, inline, inline + 1, (inline + 1 + total) // 2, total})


def test_a_failed_put_on_the_reminders_table_then_a_resume_queues_each_reminder_once(
    local_stack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """docs/reminders.md: a failure to queue while a date segment has the loan in hand is counted
    (``RemindersFailed``) and the run goes on, and the reminder segments find the loan again through its
    index; a failure in a reminder segment fails the run once every loan is brought to date, and the next
    invocation takes the FAILED run over and resumes it. Every put is a conditional put on the reminder's
    key, so whatever reached the table before the failure is not added twice. ``before``: the put never
    reaches DynamoDB; ``after``: it is stored and its answer is lost. The reminder segments' batched read
    of what is already stored fails the same way as one of their puts."""
    reminders_table = f"loan-crm-{local_stack}-reminders"
    with use_clock(FixedClock(ist("2026-06-08 10:00"))):
        for loan_id, (dues, monthly) in CRASH_BOOK.items():
            create_loan(loan_id, dues, monthly)
    baseline = run(c(-1), ist("2026-06-10 00:30"))  # the first run, a scan; the run under test is a watch run
    assert baseline.outcome is RunOutcome.COMPLETED
    initial = save(local_stack)
    before = set(listed(list(CRASH_BOOK)))

    # The clean run: the reference.
    tables: list[str] = []
    puts = Fault(0)
    with (
        hooked(ReminderModel, "before-call.dynamodb.PutItem", puts),
        hooked(
            ReminderModel,
            "before-parameter-build.dynamodb.PutItem",
            lambda params, **_: tables.append(params["TableName"]),
        ),
    ):
        clean = run(CRASH_DATE, CRASH_RUN_AT)
    assert clean.outcome is RunOutcome.COMPLETED and clean.record is not None
    assert set(tables) == {reminders_table}
    assert set(listed(list(CRASH_BOOK))) - before == CRASH_OWED
    assert inline_count(clean.record) == INLINE
    assert clean.record.reminders_queued == len(CRASH_OWED)
    total = puts.calls
    # Each owed reminder is put once: the reminder segments read which of their page's reminders are
    # stored (those queued inline, or found by two partitions) and put only the others.
    assert total == len(CRASH_OWED), f"{total} puts for {len(CRASH_OWED)} reminders"
    loans_table = f"loan-crm-{local_stack}-loans"
    reference = {table: scan(table) for table in (reminders_table, loans_table)}

    cases: list[tuple[str, str, Callable[[], Exception], int]] = [
        ("before", "PutItem", never_sent, k) for k in spread(total, INLINE)
    ]
    cases += [("after", "PutItem", answer_lost, k) for k in (1, INLINE + 1)]
    # The reminder segments' batched read of what is stored: only they make it, so it is never inline.
    cases += [("before", "BatchGetItem", never_sent, 1), ("after", "BatchGetItem", answer_lost, 2)]
    for phase, operation, error, k in cases:
        label = f"{phase}-call {operation} k={k} of {total}"
        restore(initial)
        fault = Fault(k, error)
        capsys.readouterr()
        on_table = OnTable(reminders_table, fault)
        with (
            hooked(ReminderModel, f"before-parameter-build.dynamodb.{operation}", on_table.mark),
            hooked(ReminderModel, f"{phase}-call.dynamodb.{operation}", on_table),
        ):
            first = run(CRASH_DATE, CRASH_RUN_AT)
        assert fault.fired, label
        emitted = metrics(capsys.readouterr().out)
        assert emitted["RemindersFailed"] == 1, f"{label}: {emitted}"
        if operation == "PutItem" and k <= INLINE:
            # Queued inline: counted, not fatal; the reminder segments queue what is missing.
            assert first.outcome is RunOutcome.COMPLETED, label
            assert emitted["DpdRunFailed"] == 0 and emitted["DpdRunSucceeded"] == 1, label
            assert {table: scan(table) for table in reference} == reference, f"{label}: differs from the clean run"
        else:
            assert first.outcome is RunOutcome.FAILED, label
            assert emitted["DpdRunFailed"] == 1, label
            failed = services().runs.get(CRASH_DATE)
            assert failed is not None and failed.status is RunStatus.FAILED and failed.errors == 1, label
            assert all(state.done for seg, state in failed.segments.items() if seg.anchor is None), (
                f"{label}: every loan is brought to date before the run fails"
            )
            if phase == "before" or operation == "BatchGetItem":
                assert failed.last_error == UNAVAILABLE, f"{label}: {failed.last_error}"
            stored_before = scan(reminders_table)
            # A FAILED run is taken over at once (no lease to wait for) and resumed from its checkpoints.
            # Ten minutes later, so a reminder the resumed run wrote again would show a new queued_at.
            resumed = run(CRASH_DATE, CRASH_RUN_AT + dt.timedelta(minutes=10))
            assert resumed.outcome is RunOutcome.COMPLETED, label
            assert resumed.record is not None and resumed.record.started_at == failed.started_at, label
            assert scan(loans_table) == reference[loans_table], f"{label}: loans differ from the clean run"
            final = scan(reminders_table)
            assert final.keys() == reference[reminders_table].keys(), f"{label}: reminders missing or extra"
            for key, item in final.items():
                if key in stored_before:  # stored before the failure: never written again
                    assert item == reference[reminders_table][key], (label, key)
                else:  # queued by the resumed run: as the clean run had it, but queued 10 minutes later
                    assert item["queued_at"]["S"] == "2026-06-10T19:10:00+00:00", (label, key)
                    assert {**item, "queued_at": None} == {**reference[reminders_table][key], "queued_at": None}
        final_record = services().runs.get(CRASH_DATE)
        assert final_record is not None
        # Never more than the run stored (a refused duplicate put is not counted); fewer when an answer
        # was lost, or when a page is read again after a failure midway.
        assert final_record.reminders_queued <= len(CRASH_OWED), label


def test_a_put_whose_answer_is_lost_reads_as_unavailable(local_stack: str) -> None:
    """The storage boundary turns a DynamoDB call with no answer into ``Unavailable`` (the run records
    "UNAVAILABLE: ...", the API answers 503), as it does for every other table."""
    services()
    reminder = Reminder(
        loan_id="LN-LOST",
        kind=ReminderKind.PRE_DUE_1,
        seq=1,
        due_date=dt.date(2026, 6, 11),
        business_date=dt.date(2026, 6, 10),
        send_after=ist("2026-06-11 08:00"),
        next_attempt_at=ist("2026-06-11 08:00"),
    )
    store = DynamoReminderStore()
    with hooked(ReminderModel, "after-call.dynamodb.PutItem", Fault(1, answer_lost)), pytest.raises(Unavailable):
        store.queue([reminder])
    assert store.get("LN-LOST", reminder.key) is not None, "the put itself went through"


# --------------------------------------------------------------------------------------- senders racing

SEND_DAY = dt.date(2026, 7, 18)
SEND_AT = ist("2026-07-18 09:00")
FRESH = [f"fresh-{n:02d}" for n in range(20)]
"""First instalment due 20 July: PRE_DUE_3, queued by the run for the 17th, to go out from 08:00 on the 18th."""
ORPHANS = {f"orphan-{n}": 2 for n in range(4)} | {f"stale-{n}": 6 for n in range(2)}
"""First instalment due 18 July (PRE_DUE_1, same run), each claimed by a sender that died before it
published: this many minutes before ``SEND_AT``."""
REPUBLISHED = {loan_id for loan_id, minutes in ORPHANS.items() if minutes * 60 < 240}
"""Orphaned inside the topic's deduplication window (240 s): published again. The rest: FAILED."""
SENDERS = 4


def _sender(env: dict[str, str], at: str, barrier: Any, out: Any) -> None:
    """One sender process: the wired ``ReminderService.send_due`` on a frozen clock. Every Publish call
    its SNS client makes is recorded (the FIFO topic would hide a second one)."""
    os.environ.update(env)
    from chalicelib.domain.flags import FlagName

    reminders = services().reminders
    client, _topic = reminders.publisher._topic.ready()  # type: ignore[attr-defined]
    published: list[str] = []
    client.meta.events.register(
        "before-parameter-build.sns.Publish", lambda params, **_: published.append(params["MessageDeduplicationId"])
    )
    assert reminders.flags.read(FlagName.REMINDERS_ENABLED, fresh=True).enabled  # and warm the SSM client
    reminders.store.for_loan("warm-up")
    barrier.wait(timeout=120)
    with use_clock(FixedClock(dt.datetime.fromisoformat(at))):
        report = reminders.send_due()
    out.put((published, report.as_dict()))


def _orphaned(reminder: Reminder, minutes: int) -> Reminder:
    """Claimed ``minutes`` before the senders start by one that died before publishing."""
    return claimed(reminder, SEND_AT - dt.timedelta(minutes=minutes))


def test_four_senders_racing_publish_each_reminder_exactly_once(local_stack: str, dynamodb_local: str) -> None:
    """docs/reminders.md, "Never twice": an attempt is claimed by a conditional put before anything is
    published, so of several senders that read the same reminder only one publishes it. An attempt
    orphaned less than 240 s ago is published again by exactly one of them; one orphaned longer ago is
    marked FAILED (``OUTCOME_UNKNOWN``) by exactly one of them and published by none.

    The sender processes cannot see this process's in-process moto, so SSM, SNS and SQS are served by a
    moto server on a free port; DynamoDB is the shared DynamoDB Local."""
    from moto.server import ThreadedMotoServer

    with use_clock(FixedClock(ist("2026-07-16 10:00"))):
        for loan_id in FRESH:
            create_loan(loan_id, [SEND_DAY + dt.timedelta(days=2)], monthly=True)
        for loan_id in ORPHANS:
            create_loan(loan_id, [SEND_DAY], monthly=True)
    queued = run(SEND_DAY - dt.timedelta(days=1), ist("2026-07-18 00:30"))
    assert queued.outcome is RunOutcome.COMPLETED
    loan_ids = [*FRESH, *ORPHANS]
    reminders = {key[0]: item for key, item in listed(loan_ids).items()}
    assert len(reminders) == len(loan_ids)
    store = DynamoReminderStore()
    for loan_id, minutes in ORPHANS.items():
        [reminder] = store.for_loan(loan_id)
        assert store.replace(reminder, _orphaned(reminder, minutes))

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        ssm, sns, sqs = (boto3.client(name, endpoint_url=endpoint) for name in ("ssm", "sns", "sqs"))
        # What infra/provision.py makes for a stage: the flags (every one on) and the FIFO topic, which
        # the publisher finds by its name (adapters/reminder_topic.py).
        for name, value in parameter_specs(local_stack).items():
            ssm.put_parameter(Name=name, Value=value, Type="String", Overwrite=True)
        assert (
            ssm.get_parameter(Name=f"/loan-crm/{local_stack}/flags/REMINDERS_ENABLED")["Parameter"]["Value"] == "true"
        )
        for name, attributes in topic_specs(local_stack).items():
            sns.create_topic(Name=name, Attributes=attributes)
        wanted = f":loan-crm-{local_stack}-reminders.fifo"
        topic = next(t["TopicArn"] for t in sns.list_topics()["Topics"] if t["TopicArn"].endswith(wanted))
        queue_url = sqs.create_queue(QueueName=f"{local_stack}-sms.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})

        env = {k: v for k, v in os.environ.items() if k.startswith(("AWS_", "JWT_", "PASSWORD_", "POWERTOOLS_"))}
        env.update({f"AWS_ENDPOINT_URL_{service}": endpoint for service in ("SSM", "SNS", "SQS")})
        env.update(
            {"AWS_ENDPOINT_URL_DYNAMODB": dynamodb_local, "STAGE": local_stack, "RECONCILE_AFTER_DAY_END": "false"}
        )
        ctx = processes.context()
        barrier, out = ctx.Barrier(SENDERS), ctx.Queue()
        procs = [ctx.Process(target=_sender, args=(env, SEND_AT.isoformat(), barrier, out)) for _ in range(SENDERS)]
        for proc in procs:
            proc.start()
        results = [out.get(timeout=300) for _ in procs]
        for proc in procs:
            proc.join(60)
            assert proc.exitcode == 0, f"sender exited with {proc.exitcode}"

        received: list[str] = []
        while batch := sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10).get("Messages", []):
            for message in batch:
                received.append(json.loads(message["Body"])["reminder_id"])
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    finally:
        server.stop()

    to_publish = {reminders[loan_id]["reminder_id"] for loan_id in [*FRESH, *REPUBLISHED]}
    published = collections.Counter(rid for ids, _ in results for rid in ids)
    assert all(report["skipped"] is None for _, report in results), results
    assert {rid for rid, n in published.items() if n > 1} == set(), "published by two senders"
    assert set(published) == to_publish
    totals = {
        field: sum(report[field] for _, report in results) for field in ("sent", "failed", "cancelled", "retrying")
    }
    assert totals == {"sent": len(to_publish), "failed": len(ORPHANS) - len(REPUBLISHED), "cancelled": 0, "retrying": 0}
    assert sorted(received) == sorted(to_publish), "the gateway's queue got each one once"

    after = {key[0]: item for key, item in listed(loan_ids).items()}
    for loan_id in FRESH:
        assert (after[loan_id]["status"], after[loan_id]["attempts"]) == ("SENT", 1), loan_id
    for loan_id in REPUBLISHED:
        assert (after[loan_id]["status"], after[loan_id]["attempts"]) == ("SENT", 2), loan_id
    for loan_id in ORPHANS.keys() - REPUBLISHED:
        assert (after[loan_id]["status"], after[loan_id]["reason"]) == ("FAILED", "OUTCOME_UNKNOWN"), loan_id
