"""Domain objects <-> PynamoDB items. Kept apart from the repositories so the day-end job and the
benchmarks can reuse the same translation."""

from __future__ import annotations

import datetime as dt
import zlib

from chalicelib.adapters.dynamodb.models import AuditModel, BorrowerMap, LoanModel, PaymentModel, UserModel
from chalicelib.adapters.dynamodb.sharding import logical_value, stored_value
from chalicelib.domain.audit import Action, Actor, AuditEntry, Outcome
from chalicelib.domain.delinquency import Bucket, Classification, Delinquency, oldest_unpaid_due_date
from chalicelib.domain.loan import PENDING_ESCALATION, Borrower, Loan, LoanStatus, PendingEscalation, watch_date
from chalicelib.domain.payment import NO_ALLOCATION, Payment, PaymentMode, PaymentStatus
from chalicelib.services.ports import User

WATCH_SHARDS = 16
"""Shards per watch date, and of the loans pending escalation. EMIs cluster on a few days of the month;
16 partitions per date keep one popular date from becoming one hot partition and give the day-end job
16 queries to run in parallel."""


def watch_shard(loan_id: str) -> int:
    return zlib.crc32(loan_id.encode()) % WATCH_SHARDS


def watch_key_for(day: dt.date, shard: int) -> str:
    return f"{day.isoformat()}#{shard:02d}"


def pending_key_for(shard: int) -> str:
    """The watch-index partition of the loans pending escalation in one shard, which every run reads."""
    return f"{PENDING_ESCALATION.value}#{shard:02d}"


def watch_key(loan: Loan) -> str | None:
    """The loan's ``watch_key``: ``YYYY-MM-DD#NN`` for a date watch, ``PENDING#NN`` for a loan pending
    escalation, none when only a payment can change it (``domain.loan.watch_date``)."""
    watch = watch_date(loan)
    if watch is None:
        return None
    shard = watch_shard(loan.loan_id)
    return pending_key_for(shard) if isinstance(watch, PendingEscalation) else watch_key_for(watch, shard)


def reminder_keys(loan: Loan) -> tuple[str | None, str | None]:
    """The loan's ``due_key`` and ``arrears_key`` (``models.DueIndex``, ``models.ArrearsIndex``): where the
    day-end run looks for the loans owed a reminder (docs/reminders.md). Both derive from the schedule
    as of the evaluated date, so they only move when the loan is written anyway."""
    if loan.status is not LoanStatus.ACTIVE:
        return None, None
    as_of = loan.delinquency.as_of
    upcoming = [i.due_date for i in loan.schedule if i.unpaid_paise > 0 and i.due_date > as_of]
    oldest = oldest_unpaid_due_date(loan.schedule, as_of)
    shard = watch_shard(loan.loan_id)
    return (
        watch_key_for(min(upcoming), shard) if upcoming else None,
        watch_key_for(oldest, shard) if oldest is not None else None,
    )


def loan_to_item(loan: Loan) -> LoanModel:
    d = loan.delinquency
    due_key, arrears_key = reminder_keys(loan)
    item = LoanModel(
        loan.loan_id,
        borrower=BorrowerMap(
            name=loan.borrower.name,
            phone=loan.borrower.phone,
            email=loan.borrower.email,
            address=loan.borrower.address,
        ),
        status=loan.status.value,
        principal_paise=loan.principal_paise,
        annual_rate_bps=loan.annual_rate_bps,
        disbursement_date=loan.disbursement_date,
        schedule=list(loan.schedule),
        ledger=list(loan.payments),
        outstanding_principal_paise=loan.outstanding_principal_paise,
        overdue_paise=d.overdue_paise,
        dpd=d.dpd,
        bucket=d.bucket.value,
        classification=d.classification.value,
        npa_since=d.npa_since,
        dpd_as_of=d.as_of,
        legal_escalated=loan.legal_escalated,
        legal_escalated_on=loan.legal_escalated_on,
        collector_id=loan.collector_id,
        branch=loan.branch,
        notes=loan.notes,
        watch_key=watch_key(loan),
        due_key=due_key,
        arrears_key=arrears_key,
        last_job_date=loan.last_job_date,
        created_at=loan.created_at,
        updated_at=loan.updated_at,
    )
    # An unset version means "new item" to PynamoDB (condition: attribute_not_exists); the create
    # path relies on that, every later save is conditioned on the version read.
    if loan.version:
        item.version = loan.version
    return item


def item_to_loan(item: LoanModel) -> Loan:
    b = item.borrower
    return Loan(
        loan_id=item.loan_id,
        borrower=Borrower(name=b.name, phone=b.phone, email=b.email, address=b.address),
        status=LoanStatus(item.status),
        principal_paise=item.principal_paise,
        annual_rate_bps=item.annual_rate_bps,
        disbursement_date=item.disbursement_date,
        schedule=tuple(item.schedule),
        payments=tuple(item.ledger or ()),
        delinquency=Delinquency(
            as_of=item.dpd_as_of,
            dpd=item.dpd,
            bucket=Bucket(item.bucket),
            classification=Classification(item.classification),
            npa_since=item.npa_since,
            overdue_paise=item.overdue_paise,
        ),
        legal_escalated=bool(item.legal_escalated),
        legal_escalated_on=item.legal_escalated_on,
        collector_id=item.collector_id,
        branch=item.branch,
        notes=item.notes,
        last_job_date=item.last_job_date,
        created_at=item.created_at,
        updated_at=item.updated_at,
        version=int(item.version or 0),
    )


AUDIT_SHARDED = frozenset({"actor_sub", "action", "day"})
"""The audit attributes :func:`audit_to_item` stores with a shard suffix (the audit indexes' hash keys)."""


def audit_to_item(entry: AuditEntry) -> AuditModel:
    """The entry as stored: its actor, action and day (the hash keys of the audit indexes, which one
    day-end run would give every entry alike) carry a shard suffix (``sharding``)."""
    return AuditModel(
        entry.audit_id,
        at=entry.at,
        day=stored_value(entry.day, entry.audit_id),
        actor_sub=stored_value(entry.actor.sub, entry.audit_id),
        actor_role=entry.actor.role,
        source_ip=entry.source_ip,
        request_id=entry.request_id,
        action=stored_value(entry.action.value, entry.audit_id),
        entity_type=entry.entity_type,
        entity_id=entry.entity_id,
        before=entry.before,
        after=entry.after,
        outcome=entry.outcome.value,
        reason=entry.reason,
    )


def item_to_audit(item: AuditModel) -> AuditEntry:
    """The entry, whether its keys were stored sharded or (before the sharding) bare."""
    return AuditEntry(
        audit_id=item.audit_id,
        at=item.at,
        actor=Actor(sub=logical_value(item.actor_sub), role=item.actor_role),
        source_ip=item.source_ip,
        request_id=item.request_id,
        action=Action(logical_value(item.action)),
        entity_type=item.entity_type,
        entity_id=item.entity_id,
        before=item.before,
        after=item.after,
        outcome=Outcome(item.outcome),
        reason=item.reason,
    )


def payment_to_item(payment: Payment) -> PaymentModel:
    return PaymentModel(
        payment.payment_id,
        loan_id=payment.loan_id,
        utr=payment.utr,
        amount_paise=payment.amount_paise,
        payment_date=payment.payment_date,
        mode=payment.mode.value,
        status=payment.status.value,
        posted_at=payment.posted_at,
        posted_by_sub=payment.posted_by.sub,
        posted_by_role=payment.posted_by.role,
        landed_on=payment.landed_on,
        allocation=payment.allocation if payment.status is PaymentStatus.REVERSED else None,
        request_fingerprint=payment.request_fingerprint,
        reversed_at=payment.reversed_at,
        reversed_by_sub=payment.reversed_by.sub if payment.reversed_by else None,
        reversed_by_role=payment.reversed_by.role if payment.reversed_by else None,
        reversal_reason=payment.reversal_reason,
        collector_id=payment.collector_id,
        branch=payment.branch,
    )


def item_to_payment(item: PaymentModel) -> Payment:
    reversed_by = None
    if item.reversed_by_sub is not None:
        reversed_by = Actor(sub=item.reversed_by_sub, role=item.reversed_by_role or "")
    return Payment(
        payment_id=item.payment_id,
        utr=item.utr,
        loan_id=item.loan_id,
        amount_paise=item.amount_paise,
        payment_date=item.payment_date,
        mode=PaymentMode(item.mode),
        status=PaymentStatus(item.status),
        allocation=item.allocation or NO_ALLOCATION,
        posted_at=item.posted_at,
        posted_by=Actor(sub=item.posted_by_sub, role=item.posted_by_role),
        landed_on=item.landed_on,
        request_fingerprint=item.request_fingerprint,
        reversed_at=item.reversed_at,
        reversed_by=reversed_by,
        reversal_reason=item.reversal_reason,
        collector_id=item.collector_id,
        branch=item.branch,
    )


def user_to_item(user: User) -> UserModel:
    return UserModel(
        user.username,
        role=user.role,
        password_hash=user.password_hash,
        active=user.active,
        display_name=user.display_name,
        branch=user.branch,
        created_at=user.created_at,
        updated_at=user.updated_at,
        tokens_valid_after=user.tokens_valid_after,
        version=user.version,
    )


def item_to_user(item: UserModel) -> User:
    """Items stored before a field existed read with the field's default."""
    return User(
        username=item.username,
        role=item.role,
        password_hash=item.password_hash,
        active=bool(item.active) if item.active is not None else True,
        display_name=item.display_name,
        branch=item.branch,
        created_at=item.created_at,
        updated_at=item.updated_at,
        tokens_valid_after=int(item.tokens_valid_after or 0),
        version=int(item.version or 0),
    )
