"""Borrower reminders (docs/reminders.md): which reminders a day-end run queues for a loan, when they
may be sent, whether one should still be sent, and what it says.

Pure: the day-end run, the sender and the tests all decide with these functions, so the rules live here
once. Times are IST (``clock.IST``); the contact window is RBI's recovery-conduct window for calls and
messages to borrowers.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from enum import StrEnum

from chalicelib.clock import IST
from chalicelib.domain.delinquency import dpd_from, oldest_unpaid_due_date
from chalicelib.domain.loan import Loan, LoanStatus
from chalicelib.domain.money import format_inr
from chalicelib.domain.schedule import Instalment


class ReminderKind(StrEnum):
    PRE_DUE_3 = "PRE_DUE_3"
    PRE_DUE_1 = "PRE_DUE_1"
    OVERDUE_1 = "OVERDUE_1"
    OVERDUE_7 = "OVERDUE_7"
    OVERDUE_15 = "OVERDUE_15"
    OVERDUE_30 = "OVERDUE_30"

    @property
    def overdue(self) -> bool:
        return self in OVERDUE_AT_DPD.values()


PRE_DUE_DAYS_AHEAD: dict[int, ReminderKind] = {3: ReminderKind.PRE_DUE_3, 1: ReminderKind.PRE_DUE_1}
"""Days before an instalment's due date -> the reminder the run for that date queues."""
OVERDUE_AT_DPD: dict[int, ReminderKind] = {
    1: ReminderKind.OVERDUE_1,
    7: ReminderKind.OVERDUE_7,
    15: ReminderKind.OVERDUE_15,
    30: ReminderKind.OVERDUE_30,
}
"""A loan's dpd on the run's date -> the overdue reminder queued (for the oldest unpaid instalment)."""


class ReminderStatus(StrEnum):
    QUEUED = "QUEUED"
    """Waiting for its ``send_after`` (or for the next attempt after a failure)."""
    SENDING = "SENDING"
    """An attempt is recorded and its publish is under way (or its outcome is not known yet)."""
    SENT = "SENT"
    FAILED = "FAILED"
    """Every attempt failed, or the outcome of one could not be known; ops may send it again."""
    CANCELLED = "CANCELLED"
    """No longer worth sending; ``reason`` says why."""


class CancelReason(StrEnum):
    PAID_UP = "PAID_UP"
    """The instalment it is about was paid before it went out."""
    LOAN_CLOSED = "LOAN_CLOSED"
    """The loan is no longer active (closed or written off), or gone."""
    DUE_DATE_PASSED = "DUE_DATE_PASSED"
    """A pre-due reminder that could not go out before its due date."""
    EXPIRED = "EXPIRED"
    """Not sent within ``SENDABLE_DAYS`` of its ``send_after`` (for example while the switch was off)."""


WINDOW_OPENS = dt.time(8, 0)
WINDOW_CLOSES = dt.time(19, 0)
"""Borrowers are contacted only from 08:00 to 19:00 IST; 19:00 itself is outside (nothing starts then)."""
SENDABLE_DAYS = 2
"""A reminder still unsent this many days after its ``send_after`` is cancelled as EXPIRED: a message
about a date long gone helps nobody. Its text names dates, not "tomorrow", so a day's delay is fine."""
MAX_SEND_ATTEMPTS = 5
"""Attempts at publishing one reminder (each of which retries its call a few times) before it FAILS."""
RETRY_AFTER_MINUTES = (2, 4, 8, 16)
"""Pause before the second, third, ... attempt."""
UNKNOWN_OUTCOME_RETRY_SECONDS = 240
"""An attempt whose outcome is unknown (the sender died between recording it and recording the result)
is published again only this soon after it started: the topic drops a second message with the same
deduplication id for 5 minutes, so inside that window a retry can never reach the borrower twice.
Later than that it is marked FAILED for a person to check, never sent blind."""
STALE_ATTEMPT_SECONDS = 60
"""How long an attempt may stay SENDING before another sender treats its outcome as unknown."""


class PublishRejected(Exception):
    """The topic answered that it did not take the message: safe to try again later."""


class PublishOutcomeUnknown(Exception):
    """No answer (a timeout, a dropped connection): the message may or may not have gone out."""


def in_window(at: dt.datetime) -> bool:
    local = at.astimezone(IST).time()
    return WINDOW_OPENS <= local < WINDOW_CLOSES


def send_after_for(at: dt.datetime) -> dt.datetime:
    """The first instant at or after ``at`` inside the contact window (IST)."""
    local = at.astimezone(IST)
    if in_window(local):
        return local
    day = local.date() if local.time() < WINDOW_OPENS else local.date() + dt.timedelta(days=1)
    return dt.datetime.combine(day, WINDOW_OPENS, tzinfo=IST)


@dataclass(frozen=True)
class Reminder:
    loan_id: str
    kind: ReminderKind
    seq: int
    """The instalment the reminder is about."""
    due_date: dt.date
    business_date: dt.date
    """The day-end date whose run queued it."""
    send_after: dt.datetime
    status: ReminderStatus = ReminderStatus.QUEUED
    reason: str | None = None
    attempts: int = 0
    next_attempt_at: dt.datetime | None = None
    """When the sender may next try; None once it is no longer waiting (SENT, FAILED, CANCELLED)."""
    attempt_started_at: dt.datetime | None = None
    queued_at: str = ""
    sent_at: str | None = None
    message_id: str | None = None
    collector_id: str | None = None

    @property
    def key(self) -> str:
        """Unique per loan, kind and instalment: the conditional put on it makes queueing idempotent."""
        return f"{self.kind.value}#{self.seq:03d}"

    @property
    def reminder_id(self) -> str:
        """The id ops use, and the topic's deduplication id."""
        return f"{self.loan_id}#{self.key}"

    @property
    def waiting(self) -> bool:
        return self.status in (ReminderStatus.QUEUED, ReminderStatus.SENDING)


def parse_reminder_id(reminder_id: str) -> tuple[str, str]:
    """``<loan_id>#<KIND>#<seq>`` -> (loan id, key); ValueError if it is not one."""
    loan_id, _, key = reminder_id.partition("#")
    kind, _, seq = key.partition("#")
    if not loan_id or kind not in ReminderKind.__members__ or not seq.isdigit():
        raise ValueError(f"not a reminder id: {reminder_id!r} (expected <loan_id>#<KIND>#<seq>)")
    return loan_id, f"{kind}#{int(seq):03d}"


def _oldest_unpaid(schedule: tuple[Instalment, ...], on: dt.date) -> Instalment | None:
    oldest = oldest_unpaid_due_date(schedule, on)
    if oldest is None:
        return None
    return min((i for i in schedule if i.due_date == oldest and i.unpaid_paise > 0), key=lambda i: i.seq)


def reminders_due(loan: Loan, business_date: dt.date, queued_at: dt.datetime) -> list[Reminder]:
    """The reminders the run for ``business_date`` queues for ``loan``, as it stands (every payment
    posted so far counts): a pre-due reminder for each unpaid instalment due 3 days or 1 day later, and
    an overdue reminder when the loan's dpd on that date is exactly 1, 7, 15 or 30."""
    if loan.status is not LoanStatus.ACTIVE:
        return []
    send_after = send_after_for(queued_at)

    def reminder(kind: ReminderKind, instalment: Instalment) -> Reminder:
        return Reminder(
            loan_id=loan.loan_id,
            kind=kind,
            seq=instalment.seq,
            due_date=instalment.due_date,
            business_date=business_date,
            send_after=send_after,
            next_attempt_at=send_after,
            queued_at=queued_at.astimezone(dt.UTC).isoformat(timespec="seconds"),
            collector_id=loan.collector_id,
        )

    found: list[Reminder] = []
    for instalment in loan.schedule:
        ahead = (instalment.due_date - business_date).days
        if ahead in PRE_DUE_DAYS_AHEAD and instalment.unpaid_paise > 0:
            found.append(reminder(PRE_DUE_DAYS_AHEAD[ahead], instalment))
    oldest = _oldest_unpaid(loan.schedule, business_date)
    if oldest is not None:
        kind = OVERDUE_AT_DPD.get(dpd_from(oldest.due_date, business_date))
        if kind is not None:
            found.append(reminder(kind, oldest))
    return found


def cancel_reason(reminder: Reminder, loan: Loan | None, now: dt.datetime) -> CancelReason | None:
    """Why a waiting reminder must not go out now, or None if it may."""
    if loan is None or loan.status is not LoanStatus.ACTIVE:
        return CancelReason.LOAN_CLOSED
    instalment = next((i for i in loan.schedule if i.seq == reminder.seq), None)
    if instalment is None or instalment.unpaid_paise == 0:
        return CancelReason.PAID_UP
    today = now.astimezone(IST).date()
    if not reminder.kind.overdue and today > reminder.due_date:
        return CancelReason.DUE_DATE_PASSED
    if today > reminder.send_after.astimezone(IST).date() + dt.timedelta(days=SENDABLE_DAYS):
        return CancelReason.EXPIRED
    return None


def next_attempt(reminder: Reminder, now: dt.datetime) -> dt.datetime:
    """When a failed attempt is tried again: after its pause, and never outside the window."""
    pause = RETRY_AFTER_MINUTES[min(reminder.attempts, len(RETRY_AFTER_MINUTES)) - 1]
    return send_after_for(now + dt.timedelta(minutes=pause))


def claimed(reminder: Reminder, now: dt.datetime) -> Reminder:
    """The reminder with an attempt recorded as under way from ``now``, before anything is published. An
    attempt taken over from a sender that died keeps the first one's start: the deduplication window is
    counted from the first publish."""
    return replace(
        reminder,
        status=ReminderStatus.SENDING,
        attempts=reminder.attempts + 1,
        attempt_started_at=reminder.attempt_started_at if reminder.status is ReminderStatus.SENDING else now,
        next_attempt_at=now + dt.timedelta(seconds=STALE_ATTEMPT_SECONDS),
    )


def retried(reminder: Reminder, now: dt.datetime, error: str) -> Reminder:
    """The reminder after a failed attempt: queued again after a pause, or FAILED after the last."""
    if reminder.attempts >= MAX_SEND_ATTEMPTS:
        return replace(reminder, status=ReminderStatus.FAILED, reason=error, next_attempt_at=None)
    return replace(reminder, status=ReminderStatus.QUEUED, reason=error, next_attempt_at=next_attempt(reminder, now))


# --- what the borrower reads ------------------------------------------------------------------------------

TEMPLATES: dict[str, dict[str, str]] = {
    "en": {
        "PRE_DUE": (
            "Dear {name}, your EMI of {amount} for loan {loan} is due on {due}. "
            "Please keep the amount ready in your account. Ignore if already paid."
        ),
        "OVERDUE": (
            "Dear {name}, your EMI for loan {loan} due on {due} is unpaid. Amount overdue: {amount}. "
            "Please pay at the earliest to avoid charges and impact on your credit score. Ignore if already paid."
        ),
    },
    "hi": {
        "PRE_DUE": (
            "प्रिय {name}, ऋण {loan} की {amount} की EMI {due} को देय है। "
            "कृपया खाते में राशि तैयार रखें। यदि भुगतान कर चुके हैं तो इसे अनदेखा करें।"
        ),
        "OVERDUE": (
            "प्रिय {name}, ऋण {loan} की {due} को देय EMI का भुगतान नहीं हुआ है। बकाया राशि: {amount}। "
            "शुल्क और क्रेडिट स्कोर पर असर से बचने के लिए कृपया शीघ्र भुगतान करें। "
            "यदि भुगतान कर चुके हैं तो इसे अनदेखा करें।"
        ),
    },
}
"""Every message is rendered in each language here; the SMS gateway picks the borrower's."""


def render(reminder: Reminder, loan: Loan, now: dt.datetime) -> dict[str, str]:
    """The texts of one reminder, by language: the amount is what is unpaid when it is sent (the
    instalment's unpaid part before it is due, the loan's whole overdue amount after)."""
    as_of = now.astimezone(IST).date()
    if reminder.kind.overdue:
        amount = sum(i.unpaid_paise for i in loan.schedule if i.due_date <= as_of)
        template = "OVERDUE"
    else:
        amount = next((i.unpaid_paise for i in loan.schedule if i.seq == reminder.seq), 0)
        template = "PRE_DUE"
    fields = {
        "name": loan.borrower.name,
        "amount": format_inr(amount),
        "loan": loan.loan_id,
        "due": reminder.due_date.strftime("%d %b %Y"),
    }
    return {language: texts[template].format(**fields) for language, texts in TEMPLATES.items()}
