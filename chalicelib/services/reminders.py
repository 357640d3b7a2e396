"""Sending borrower reminders (docs/reminders.md). The day-end run queues them; this sends the ones whose
time has come, inside the contact window, at most once each.

At most once: an attempt is recorded (QUEUED -> SENDING, conditioned on the stored state, so two senders
cannot both take it) before anything is published, and the publish carries the reminder's id as the
topic's deduplication id. A publish with no answer is sent again at once under the same id, which the
topic drops if the first one arrived; a sender that died mid-attempt leaves the reminder SENDING, and
the next sender publishes it again only while the topic would still drop a duplicate, or else marks it
FAILED for a person to check. Nothing is ever sent twice on a guess.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib import clock
from chalicelib.domain.audit import Action
from chalicelib.domain.errors import NotFound, ValidationFailed
from chalicelib.domain.flags import FlagName
from chalicelib.domain.loan import Loan
from chalicelib.domain.privacy import mask_phone
from chalicelib.domain.reminders import (
    UNKNOWN_OUTCOME_RETRY_SECONDS,
    PublishOutcomeUnknown,
    PublishRejected,
    Reminder,
    ReminderStatus,
    cancel_reason,
    claimed,
    in_window,
    parse_reminder_id,
    render,
    retried,
    send_after_for,
)
from chalicelib.domain.roles import ADMIN_ONLY
from chalicelib.services.budget import Budget
from chalicelib.services.context import RequestContext
from chalicelib.services.ports import Flags, LoanRepository, Metrics, ReminderPublisher, ReminderStore

logger = logging.getLogger(__name__)
"""Written by the app's log handler (docs/logging.md). A line per reminder that is sent, cancelled or
given up on (a handful a minute, inside the window), and one per sending pass."""

OUTCOME_UNKNOWN = "OUTCOME_UNKNOWN"


@dataclass
class SendReport:
    """What one sender invocation did."""

    sent: int = 0
    cancelled: int = 0
    retrying: int = 0
    failed: int = 0
    skipped: str | None = None
    """Why nothing was looked at: the switch is off, or it is outside the contact window."""
    more: bool = False
    """Stopped for time with reminders still due (the next invocation carries on)."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ReminderService:
    store: ReminderStore
    loans: LoanRepository
    publisher: ReminderPublisher
    flags: Flags
    metrics: Metrics
    shards: int = 4

    @staticmethod
    def _log_extra(reminder: Reminder) -> dict[str, Any]:
        """What a log line says about a reminder: never the borrower's phone unmasked."""
        return {"reminder_id": reminder.reminder_id, "kind": reminder.kind.value, "loan_id": reminder.loan_id}

    # --- reading --------------------------------------------------------------------------------------

    def for_loan(self, loan_id: str) -> list[dict[str, Any]]:
        """A loan's reminders, oldest instalment first (access is checked by the caller, on the loan)."""
        reminders = sorted(self.store.for_loan(loan_id), key=lambda r: (r.due_date, r.seq, r.business_date, r.key))
        return [reminder_dict(r) for r in reminders]

    def on_day(self, day: dt.date) -> list[Reminder]:
        return sorted(self.store.on_day(day), key=lambda r: (r.send_after, r.reminder_id))

    # --- sending --------------------------------------------------------------------------------------

    def send_due(self, time_left_ms: Callable[[], int] | None = None) -> SendReport:
        """Send what is due now; any time budget makes progress (the work is idempotent, so what is left
        waits for the next invocation: the schedule runs every few minutes inside the window)."""
        started = time.monotonic()
        report = SendReport()
        try:
            self._send_due(report, time_left_ms)
        except Exception:
            _log_pass(report, "ERROR", started)
            raise
        _log_pass(report, "SKIPPED" if report.skipped else "MORE" if report.more else "DONE", started)
        return report

    def _send_due(self, report: SendReport, time_left_ms: Callable[[], int] | None) -> None:
        """Fills ``report`` in as it goes, so an error still leaves what was done to log."""
        if not self.flags.read(FlagName.REMINDERS_ENABLED, fresh=True).enabled:
            report.skipped = "REMINDERS_ENABLED is off"
            return
        if not in_window(clock.now_ist()):
            report.skipped = "outside the 08:00-19:00 IST contact window"
            return
        budget = Budget.start(time_left_ms)
        for shard in range(self.shards):
            cursor: dict[str, Any] | None = None
            while True:
                if budget.spent() or not in_window(clock.now_ist()):
                    report.more = True
                    return
                waiting, cursor = self.store.waiting(shard, clock.now_ist(), cursor)
                for reminder in waiting:
                    self._attempt(reminder, report)
                budget.progressed.set()
                if cursor is None:
                    break

    def send_due_quietly(self) -> None:
        """After a day-end run (a catch-up run inside the window sends at once); never fails the run."""
        try:
            self.send_due()
        except Exception:
            logger.exception("reminders could not be sent after the day-end run")
            self.metrics.count("RemindersFailed")

    def _attempt(self, reminder: Reminder, report: SendReport) -> None:
        now = clock.now_ist()
        loan = self.loans.get(reminder.loan_id)
        reason = cancel_reason(reminder, loan, now)
        if reason is not None:
            cancelled = dataclasses.replace(
                reminder, status=ReminderStatus.CANCELLED, reason=reason.value, next_attempt_at=None
            )
            if self.store.replace(reminder, cancelled):
                report.cancelled += 1
                logger.info("reminder cancelled", extra={**self._log_extra(reminder), "reason": reason.value})
            return
        assert loan is not None
        if reminder.status is ReminderStatus.SENDING:
            started = reminder.attempt_started_at or now
            if (now - started).total_seconds() > UNKNOWN_OUTCOME_RETRY_SECONDS:
                self._settle(reminder, self._failed(reminder, OUTCOME_UNKNOWN), report)
                return
        attempt = claimed(reminder, now)
        if not self.store.replace(reminder, attempt):
            return  # another sender took it
        self._settle(attempt, self._publish(attempt, loan, now), report)

    def _publish(self, claimed: Reminder, loan: Loan, now: dt.datetime) -> Reminder:
        message = {
            "reminder_id": claimed.reminder_id,
            "loan_id": claimed.loan_id,
            "kind": claimed.kind.value,
            "seq": claimed.seq,
            "due_date": claimed.due_date.isoformat(),
            "borrower": {"name": loan.borrower.name, "phone": loan.borrower.phone},
            "texts": render(claimed, loan, now),
        }
        extra = {**self._log_extra(claimed), "phone": mask_phone(loan.borrower.phone), "attempt": claimed.attempts}
        try:
            message_id = self.publisher.publish(claimed, message)
        except PublishRejected as exc:
            logger.warning("reminder publish refused", extra={**extra, "error": str(exc)})
            again = retried(claimed, clock.now_ist(), f"publish refused: {exc}")
            return dataclasses.replace(again, attempt_started_at=None)
        except PublishOutcomeUnknown:
            logger.warning("reminder publish outcome unknown", extra=extra)
            return self._failed(claimed, OUTCOME_UNKNOWN)
        logger.info("reminder sent", extra={**extra, "message_id": message_id})
        return dataclasses.replace(
            claimed,
            status=ReminderStatus.SENT,
            reason=None,
            sent_at=clock.now_iso(),
            message_id=message_id,
            next_attempt_at=None,
        )

    def _failed(self, reminder: Reminder, reason: str) -> Reminder:
        return dataclasses.replace(reminder, status=ReminderStatus.FAILED, reason=reason, next_attempt_at=None)

    def _settle(self, before: Reminder, after: Reminder, report: SendReport) -> None:
        if not self.store.replace(before, after):
            logger.warning("reminder changed under its sender", extra=self._log_extra(before))
            return
        if after.status is ReminderStatus.SENT:
            report.sent += 1
            self.metrics.count("RemindersSent")
        elif after.status is ReminderStatus.FAILED:
            report.failed += 1
            self.metrics.count("RemindersFailed")
            logger.error("reminder FAILED", extra={**self._log_extra(after), "reason": after.reason})
        else:
            report.retrying += 1

    # --- ops ------------------------------------------------------------------------------------------

    def resend(self, ctx: RequestContext, reminder_id: str) -> Reminder:
        """Queue a FAILED reminder again, to go out at the next instant inside the window (audited). Only
        a person can decide that a reminder whose outcome was unknown did not reach the borrower."""
        ctx.require(ADMIN_ONLY)
        try:
            loan_id, key = parse_reminder_id(reminder_id)
        except ValueError as exc:
            raise ValidationFailed(str(exc)) from None
        reminder = self.store.get(loan_id, key)
        if reminder is None:
            raise NotFound(f"reminder {reminder_id} not found")
        if reminder.status is not ReminderStatus.FAILED:
            raise ValidationFailed(
                f"reminder {reminder_id} is {reminder.status.value}; only a FAILED one is sent again"
            )
        at = send_after_for(clock.now_ist())
        again = dataclasses.replace(
            reminder,
            status=ReminderStatus.QUEUED,
            reason=f"resent by {ctx.actor.sub} after {reminder.reason or 'failure'}",
            attempts=0,
            send_after=at,
            next_attempt_at=at,
            attempt_started_at=None,
        )
        entry = ctx.audit_entry(
            Action.REMINDER_RESENT,
            "reminder",
            reminder.reminder_id,
            {"status": reminder.status.value, "reason": reminder.reason, "attempts": reminder.attempts},
            {"status": again.status.value, "send_after": at.isoformat(timespec="seconds")},
        )
        if not self.store.replace(reminder, again, audit=entry):
            raise ValidationFailed(f"reminder {reminder_id} changed meanwhile; look again")
        return again


def _log_pass(report: SendReport, outcome: str, started: float) -> None:
    """One line per sending pass: ``DONE`` (nothing due is left), ``MORE`` (stopped for time or at the end
    of the window; the next pass carries on), ``SKIPPED`` (the switch or the window), or ``ERROR``."""
    logger.info(
        "reminders sending pass",
        extra={
            **report.as_dict(),
            "outcome": outcome,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
        },
    )


def reminder_dict(reminder: Reminder) -> dict[str, Any]:
    return {
        "reminder_id": reminder.reminder_id,
        "kind": reminder.kind.value,
        "seq": reminder.seq,
        "due_date": reminder.due_date.isoformat(),
        "business_date": reminder.business_date.isoformat(),
        "send_after": reminder.send_after.astimezone(clock.IST).isoformat(timespec="seconds"),
        "status": reminder.status.value,
        "reason": reminder.reason,
        "attempts": reminder.attempts,
        "sent_at": reminder.sent_at,
    }
