"""The JSON shape of a loan (docs/rules.md) and of a user (docs/auth.md), shared by API responses and
audit snapshots so the audit shows exactly what a client would have seen."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.legal import LegalCase
from chalicelib.domain.loan import Loan
from chalicelib.domain.payment import Payment
from chalicelib.domain.portfolio import Summary
from chalicelib.domain.reconciliation import ReconciliationRun
from chalicelib.domain.runs import RunRecord
from chalicelib.services.ports import User


def borrower_dict(loan: Loan) -> dict[str, Any]:
    b = loan.borrower
    return {"name": b.name, "phone": b.phone, "email": b.email, "address": b.address}


def loan_dict(loan: Loan) -> dict[str, Any]:
    d = loan.delinquency
    return {
        "loan_id": loan.loan_id,
        "borrower": borrower_dict(loan),
        "status": loan.status.value,
        "principal_paise": loan.principal_paise,
        "annual_rate_bps": loan.annual_rate_bps,
        "tenure_months": loan.tenure_months,
        "disbursement_date": loan.disbursement_date.isoformat(),
        "outstanding_principal_paise": loan.outstanding_principal_paise,
        "overdue_paise": d.overdue_paise,
        "dpd": d.dpd,
        "bucket": d.bucket.value,
        "classification": d.classification.value,
        "npa_since": d.npa_since.isoformat() if d.npa_since else None,
        "dpd_as_of": d.as_of.isoformat(),
        "legal": {
            "escalated": loan.legal_escalated,
            "escalated_on": loan.legal_escalated_on.isoformat() if loan.legal_escalated_on else None,
        },
        "collector_id": loan.collector_id,
        "branch": loan.branch,
        "notes": loan.notes,
        "schedule": [
            {
                "seq": i.seq,
                "due_date": i.due_date.isoformat(),
                "principal_paise": i.principal_paise,
                "interest_paise": i.interest_paise,
                "paid_principal_paise": i.paid_principal_paise,
                "paid_interest_paise": i.paid_interest_paise,
            }
            for i in loan.schedule
        ],
        "created_at": loan.created_at,
        "updated_at": loan.updated_at,
        "version": loan.version,
    }


def run_dict(record: RunRecord) -> dict[str, Any]:
    return {
        "business_date": record.business_date.isoformat(),
        "status": record.status.value,
        "trigger": record.trigger,
        "mode": record.mode,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "loans_scanned": record.loans_scanned,
        "loans_updated": record.loans_updated,
        "escalated": record.escalated,
        "pending_escalation": record.pending_escalation,
        "errors": record.errors,
        "last_error": record.last_error,
    }


def case_dict(case: LegalCase) -> dict[str, Any]:
    return {
        "case_id": case.case_id,
        "loan_id": case.loan_id,
        "status": case.status,
        "escalated_on": case.escalated_on.isoformat(),
        "dpd": case.dpd,
        "overdue_paise": case.overdue_paise,
        "outstanding_principal_paise": case.outstanding_principal_paise,
        "borrower_name": case.borrower_name,
        "collector_id": case.collector_id,
        "branch": case.branch,
        "created_at": case.created_at,
    }


def loan_money_dict(loan: Loan) -> dict[str, Any]:
    """The money and delinquency side of a loan: what payments and the day-end job change."""
    d = loan.delinquency
    return {
        "status": loan.status.value,
        "outstanding_principal_paise": loan.outstanding_principal_paise,
        "overdue_paise": d.overdue_paise,
        "dpd": d.dpd,
        "bucket": d.bucket.value,
        "classification": d.classification.value,
        "npa_since": d.npa_since.isoformat() if d.npa_since else None,
    }


def loan_balance_dict(loan: Loan) -> dict[str, Any]:
    """The money side of a loan as a payment's audit entry records it. Delinquency is left to the
    DELINQUENCY_CHANGED entry written with it, so each loan's delinquency trail is one chain."""
    return {
        "status": loan.status.value,
        "outstanding_principal_paise": loan.outstanding_principal_paise,
        "overdue_paise": loan.delinquency.overdue_paise,
    }


def payment_dict(payment: Payment) -> dict[str, Any]:
    return {
        "payment_id": payment.payment_id,
        "utr": payment.utr,
        "loan_id": payment.loan_id,
        "amount_paise": payment.amount_paise,
        "payment_date": payment.payment_date.isoformat(),
        "mode": payment.mode.value,
        "status": payment.status.value,
        "allocation": {
            "interest_paise": payment.allocation.interest_paise,
            "principal_paise": payment.allocation.principal_paise,
            "instalments": [
                {"seq": line.seq, "interest_paise": line.interest_paise, "principal_paise": line.principal_paise}
                for line in payment.allocation.lines
            ],
        },
        "posted_at": payment.posted_at,
        "posted_by": payment.posted_by.sub,
        "reversed_at": payment.reversed_at,
        "reversed_by": payment.reversed_by.sub if payment.reversed_by else None,
        "reversal_reason": payment.reversal_reason,
    }


def user_dict(user: User) -> dict[str, Any]:
    """A user as anyone may see it (``domain.users.PUBLIC_FIELDS``): never the password hash, never the
    token cut-off."""
    return {
        "username": user.username,
        "role": user.role,
        "display_name": user.display_name,
        "branch": user.branch,
        "active": user.active,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


def summary_dict(summary: Summary) -> dict[str, Any]:
    """The dashboard as the API answers it (docs/api.md, "Dashboard")."""
    return {
        "as_of": summary.as_of.isoformat(),
        "today": summary.today.isoformat(),
        "scope": summary.scope.key,
        "loans": {"total": summary.loans_total, "active": summary.loans_active},
        "outstanding_principal_paise": summary.outstanding_principal_paise,
        "overdue_paise": summary.overdue_paise,
        "collections": {
            "today_paise": summary.collections_today_paise,
            "today_count": summary.collections_today_count,
            "mtd_paise": summary.collections_mtd_paise,
        },
        "buckets": {
            bucket: {"count": count, "outstanding_principal_paise": outstanding}
            for bucket, (count, outstanding) in summary.buckets.items()
        },
        "classification": dict(summary.classification),
        "avg_dpd": summary.avg_dpd,
        "legal_escalated": summary.legal_escalated,
    }


def reconciliation_dict(run: ReconciliationRun) -> dict[str, Any]:
    """A reconciliation run as the API answers it (docs/api.md, "Reconciliation")."""
    return {
        "run_id": run.run_id,
        "status": run.status.value,
        "trigger": run.trigger,
        "as_of": run.as_of.isoformat(),
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "loans_checked": run.loans_checked,
        "payments_checked": run.payments_checked,
        "claims_checked": run.claims_checked,
        "mismatch_count": run.mismatch_count,
        "mismatches": [m.as_dict() for m in run.mismatches or []],
        "unverified": list(run.unverified or []),
        "error": run.error,
    }
