"""The morning digest (docs/runbook/monitoring.md): the daily checklist's questions about the previous
IST day answered from the stored data, and sent as one plain-text message to the alerts topic at 09:00
IST, so the on-call person starts the day with a verdict instead of a list of commands.

Everything comes from the tables the jobs and the API already write: the day-end run record, the audit
trail (postings and reversals, and refused postings, which the payment service audits), the reminders of
the day and the latest reconciliation report. Nothing is read from CloudWatch: the refusals the audit
trail does not keep (amount, date, loan state) are only in the ``PaymentRejected`` metric, and the
message says where to look for them.

The digest never changes anything. A failure to read or to publish is counted (``DigestFailed``, which
an alarm watches) and raised, so Lambda's own retries of the scheduled invocation try again.
"""

from __future__ import annotations

import collections
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from chalicelib import clock
from chalicelib.domain.audit import Action, AuditEntry, Outcome
from chalicelib.domain.money import format_inr
from chalicelib.domain.reconciliation import ReconciliationRun, ReconciliationStatus
from chalicelib.domain.reminders import Reminder, ReminderStatus
from chalicelib.domain.runs import RunRecord, RunStatus
from chalicelib.services.ports import (
    AlertPublisher,
    AuditFilter,
    AuditLog,
    Metrics,
    ReconciliationRuns,
    ReminderStore,
    RunStore,
)

AUDIT_PAGE = 1000
"""Entries per audit read: a busy collection day has thousands of postings, each entry about 1 KB."""
WAITING = frozenset({ReminderStatus.QUEUED, ReminderStatus.SENDING})


@dataclass(frozen=True)
class DayEnd:
    """The night's run for the business date, or None when there is no record of one."""

    record: RunRecord | None

    def lines(self) -> list[str]:
        r = self.record
        if r is None:
            return ["no run recorded"]
        timing = f"started {_hhmm(r.started_at)} IST"
        if r.finished_at:
            timing += f", finished {_hhmm(r.finished_at)} IST ({_took(r.started_at, r.finished_at)})"
        lines = [
            f"{r.status.value}, business date {r.business_date.isoformat()}, {timing}",
            f"loans scanned {r.loans_scanned:,}, updated {r.loans_updated:,}, errors {r.errors}",
            f"escalated to legal {r.escalated:,}, pending escalation {r.pending_escalation:,}",
        ]
        if r.last_error:
            lines.append(f"last error: {r.last_error}")
        return lines

    def problems(self, business_date: dt.date) -> list[str]:
        r = self.record
        if r is None:
            return [f"no day-end run for {business_date}: python -m ops dpd runs"]
        found = []
        if r.status is not RunStatus.COMPLETED:
            found.append(f"the day-end run for {business_date} is {r.status.value}: python -m ops dpd runs --json")
        if r.errors:
            found.append(f"errors counted by the day-end run for {business_date}: {r.errors}")
        if r.pending_escalation:
            found.append(
                f"loans pending legal escalation: {r.pending_escalation} (0 unless ESCALATION_ENABLED is off by intent)"
            )
        return found


@dataclass
class Money:
    count: int = 0
    paise: int = 0

    def add(self, entry: AuditEntry) -> None:
        self.count += 1
        self.paise += _amount_paise(entry)

    def __str__(self) -> str:
        return f"{self.count:,} ({format_inr(self.paise)})"


@dataclass
class Payments:
    """The day's postings and reversals, and the refused postings the audit trail keeps, by reason."""

    posted: Money = field(default_factory=Money)
    reversed: Money = field(default_factory=Money)
    refused: collections.Counter[str] = field(default_factory=collections.Counter)

    def lines(self) -> list[str]:
        refused = ", ".join(f"{code} {n}" for code, n in sorted(self.refused.items())) or "none"
        return [
            f"posted {self.posted}",
            f"reversed {self.reversed}",
            f"refused, as audited: {refused}",
            "refused for amount, date or loan state: the PaymentRejected metric (by reason), not counted here",
        ]


@dataclass(frozen=True)
class Reminders:
    by_status: dict[ReminderStatus, int]

    @classmethod
    def of(cls, reminders: list[Reminder]) -> Reminders:
        counts = collections.Counter(r.status for r in reminders)
        return cls({status: counts.get(status, 0) for status in ReminderStatus})

    def lines(self) -> list[str]:
        b = self.by_status
        waiting = sum(b[s] for s in WAITING)
        return [
            f"sent {b[ReminderStatus.SENT]:,}, failed {b[ReminderStatus.FAILED]:,}, "
            f"cancelled {b[ReminderStatus.CANCELLED]:,}, never sent {waiting:,}"
        ]

    def problems(self, business_date: dt.date) -> list[str]:
        found = []
        failed = self.by_status[ReminderStatus.FAILED]
        if failed:
            found.append(
                f"FAILED reminders: {failed} (python -m ops reminders list --date {business_date} --status FAILED)"
            )
        # The contact window closed at 19:00 on the day: anything still waiting was never sent then.
        waiting = sum(self.by_status[s] for s in WAITING)
        if waiting:
            found.append(f"reminders due on {business_date} never sent: {waiting}")
        return found


@dataclass(frozen=True)
class Reconciliation:
    run: ReconciliationRun | None

    def lines(self) -> list[str]:
        run = self.run
        if run is None:
            return ["none has finished yet"]
        finished = f", finished {_hhmm(run.finished_at)} IST" if run.finished_at else ""
        lines = [
            f"{run.status.value} as of {run.as_of.isoformat()} ({run.trigger}){finished}",
            f"loans checked {run.loans_checked:,}, payments {run.payments_checked:,}, "
            f"mismatches {run.mismatch_count}, unverified counters {len(run.unverified or [])}",
        ]
        if run.error:
            lines.append(f"error: {run.error}")
        return lines

    def problems(self, business_date: dt.date) -> list[str]:
        run = self.run
        if run is None:
            return ["no reconciliation has finished yet"]
        found = []
        if run.status is ReconciliationStatus.FAILED:
            found.append(f"the latest reconciliation FAILED: {run.error or 'see its report'}")
        if run.mismatch_count:
            found.append(
                f"mismatches found by the latest reconciliation: {run.mismatch_count} "
                "(python -m ops api GET /api/v1/reconciliation/latest)"
            )
        if run.as_of < business_date:
            found.append(f"the latest reconciliation is as of {run.as_of}: none finished after the night's run")
        return found


@dataclass(frozen=True)
class Digest:
    stage: str
    business_date: dt.date
    made_at: dt.datetime
    day_end: DayEnd
    payments: Payments
    reminders: Reminders
    reconciliation: Reconciliation

    @property
    def problems(self) -> list[str]:
        d = self.business_date
        return [*self.day_end.problems(d), *self.reminders.problems(d), *self.reconciliation.problems(d)]

    @property
    def subject(self) -> str:
        """ASCII and short, as SNS requires of a subject (it is the e-mail's subject line)."""
        n = len(self.problems)
        verdict = "all clear" if n == 0 else f"{n} to look at"
        return f"loan-crm {self.stage} digest {self.business_date.isoformat()}: {verdict}"

    def text(self) -> str:
        day = self.business_date
        sections = [
            (f"Day-end run for {day}", self.day_end.lines()),
            (f"Payments on {day} (IST)", self.payments.lines()),
            (f"Reminders due on {day}", self.reminders.lines()),
            ("Latest reconciliation", self.reconciliation.lines()),
        ]
        problems = self.problems
        parts = [
            f"loan-crm {self.stage}: morning digest for business date {day} ({day.strftime('%a')}), "
            f"made {self.made_at.strftime('%Y-%m-%d %H:%M')} IST",
            "",
            "Needs a look:" if problems else "Needs a look: nothing",
            *(f"  - {p}" for p in problems),
        ]
        for title, lines in sections:
            parts += ["", title, *(f"  {line}" for line in lines)]
        parts += ["", "Runbook: docs/runbook/monitoring.md (daily checklist)"]
        return "\n".join(parts) + "\n"


@dataclass(frozen=True)
class Sent:
    digest: Digest
    message_id: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "business_date": self.digest.business_date.isoformat(),
            "subject": self.digest.subject,
            "problems": self.digest.problems,
            "message_id": self.message_id,
        }


@dataclass
class DigestService:
    runs: RunStore
    audit: AuditLog
    reminders: ReminderStore
    reconciliations: ReconciliationRuns
    publisher: AlertPublisher
    metrics: Metrics
    stage: str

    def compile(self, business_date: dt.date) -> Digest:
        """The digest of one business date (an IST day), read from the tables; writes nothing."""
        return Digest(
            stage=self.stage,
            business_date=business_date,
            made_at=clock.now_ist(),
            day_end=DayEnd(self.runs.get(business_date)),
            payments=self._payments(business_date),
            reminders=Reminders.of(self.reminders.on_day(business_date)),
            reconciliation=Reconciliation(self.reconciliations.latest()),
        )

    def send(self, business_date: dt.date) -> Sent:
        """Compile the digest and publish it to the alerts topic; ``DigestSent``, or ``DigestFailed`` and
        the error raised again."""
        try:
            digest = self.compile(business_date)
            message_id = self.publisher.publish(digest.subject, digest.text())
        except Exception:
            self.metrics.count("DigestFailed")
            raise
        self.metrics.count("DigestSent")
        return Sent(digest, message_id)

    def _payments(self, day: dt.date) -> Payments:
        payments = Payments()
        for entry in self._entries(Action.PAYMENT_POSTED, day):
            if entry.outcome is Outcome.SUCCESS:
                payments.posted.add(entry)
            else:
                payments.refused[_reason_code(entry.reason)] += 1
        for entry in self._entries(Action.PAYMENT_REVERSED, day):
            if entry.outcome is Outcome.SUCCESS:
                payments.reversed.add(entry)
        return payments

    def _entries(self, action: Action, day: dt.date) -> Iterator[AuditEntry]:
        filters = AuditFilter(action=action.value, from_day=day.isoformat(), to_day=day.isoformat())
        cursor: str | None = None
        while True:
            page = self.audit.list(filters, AUDIT_PAGE, cursor)
            yield from page.items
            cursor = page.next_cursor
            if cursor is None:
                return


def _amount_paise(entry: AuditEntry) -> int:
    """The payment's amount as its PAYMENT_POSTED or PAYMENT_REVERSED entry records it."""
    after = entry.after if isinstance(entry.after, dict) else {}
    payment = after.get("payment")
    amount = payment.get("amount_paise") if isinstance(payment, dict) else None
    return amount if isinstance(amount, int) else 0


def _reason_code(reason: str | None) -> str:
    """``DUPLICATE_UTR: ... was used before`` -> ``DUPLICATE_UTR``: the code, without the UTR."""
    return (reason or "UNKNOWN").partition(":")[0].strip() or "UNKNOWN"


def _hhmm(iso: str) -> str:
    return dt.datetime.fromisoformat(iso).astimezone(clock.IST).strftime("%H:%M")


def _took(started: str, finished: str) -> str:
    seconds = int((dt.datetime.fromisoformat(finished) - dt.datetime.fromisoformat(started)).total_seconds())
    minutes, seconds = divmod(max(seconds, 0), 60)
    return f"{minutes} min {seconds} s"
