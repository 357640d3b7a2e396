"""Builds the services once per process (per Lambda container) from settings, on first use.

Nothing here runs at import time, so ``import app`` stays cheap and tests can point the environment
at moto or DynamoDB Local before the first request; :func:`reset` drops everything for the next test.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Any

from chalicelib.adapters.alerts_topic import SnsAlertPublisher
from chalicelib.adapters.dynamodb import models
from chalicelib.adapters.dynamodb.aggregates import DynamoPortfolio
from chalicelib.adapters.dynamodb.audit import DynamoAuditLog
from chalicelib.adapters.dynamodb.delinquency import DynamoDelinquencyStore
from chalicelib.adapters.dynamodb.idempotency import idempotency_store
from chalicelib.adapters.dynamodb.loans import DynamoLoanRepository
from chalicelib.adapters.dynamodb.mapping import WATCH_SHARDS
from chalicelib.adapters.dynamodb.payments import DynamoPaymentRepository
from chalicelib.adapters.dynamodb.reconciliation import DynamoLedgerReader, DynamoReconciliationRuns
from chalicelib.adapters.dynamodb.reminders import OUTBOX_SHARDS, DynamoReminderStore
from chalicelib.adapters.dynamodb.runs import DynamoRunStore
from chalicelib.adapters.dynamodb.scores import DynamoAssignmentLog, DynamoLiveCollections, DynamoScoreStore
from chalicelib.adapters.dynamodb.users import DynamoLoginThrottle, DynamoUserStore
from chalicelib.adapters.flags import SsmFlags
from chalicelib.adapters.health import HealthProbe
from chalicelib.adapters.lambda_dispatch import LambdaJobDispatcher, LambdaReconciliationDispatcher
from chalicelib.adapters.metrics import EmfMetrics
from chalicelib.adapters.reminder_topic import SnsReminderPublisher
from chalicelib.adapters.secrets import jwt_secret
from chalicelib.config import Settings, reset_settings, settings
from chalicelib.services.auth import AuthService
from chalicelib.services.dashboard import DashboardService
from chalicelib.services.day_end import DayEndService
from chalicelib.services.denials import DenialRecorder
from chalicelib.services.digest import DigestService
from chalicelib.services.loans import LoanService
from chalicelib.services.payments import PaymentService
from chalicelib.services.ports import AuditLog
from chalicelib.services.reassignment import ReassignmentService
from chalicelib.services.reconciliation import ReconciliationService
from chalicelib.services.reminders import ReminderService
from chalicelib.services.run_calendar import CompletedThrough
from chalicelib.services.scoring import ScoringService
from chalicelib.services.users import UserService


@dataclass
class Services:
    settings: Settings
    loans: LoanService
    payments: PaymentService
    auth: AuthService
    audit: AuditLog
    health: HealthProbe
    jwt_secret: Any
    idempotency_store: Any
    """Callable: the idempotency records (``adapters.dynamodb.idempotency``), made on the first request
    that needs it."""
    flags: SsmFlags
    runs: DynamoRunStore
    delinquency: DynamoDelinquencyStore
    dpd_job: DayEndService
    completed_through: CompletedThrough
    metrics: EmfMetrics
    denials: DenialRecorder
    reassignment: ReassignmentService
    dashboard: DashboardService
    reconciliation: ReconciliationService
    reminders: ReminderService
    scoring: ScoringService
    digest: DigestService
    users: UserService = field(init=False)
    """Built after the rest: offboarding moves loans through ``reassignment``."""


_services: Services | None = None


def build(config: Settings) -> Services:
    models.bind(config)
    metrics = EmfMetrics(namespace=f"LoanCRM/{config.stage}")
    users = DynamoUserStore()
    audit = DynamoAuditLog()
    secret = partial(jwt_secret, config)
    runs = DynamoRunStore()
    completed_through = CompletedThrough(runs.latest_completed)
    loans = LoanService(
        loans=DynamoLoanRepository(),
        audit=audit,
        users=users,
        metrics=metrics,
        evaluated_through=completed_through,
    )
    flags = SsmFlags(config, metrics)
    delinquency = DynamoDelinquencyStore()
    portfolio = DynamoPortfolio()
    reconciliation = ReconciliationService(
        ledger=DynamoLedgerReader(),
        portfolio=portfolio,
        runs=DynamoReconciliationRuns(),
        metrics=metrics,
        dispatcher=LambdaReconciliationDispatcher(),
        # Collector scores are computed by the same pass (docs/scoring.md).
        flags=flags,
        scores=DynamoScoreStore(),
        assignments=DynamoAssignmentLog(),
    )

    reminder_store = DynamoReminderStore()
    reminders = ReminderService(
        store=reminder_store,
        loans=loans.loans,
        publisher=SnsReminderPublisher(config),
        flags=flags,
        metrics=metrics,
        shards=OUTBOX_SHARDS,
    )

    def completed(business_date: dt.date) -> None:
        completed_through.note(business_date)
        reminders.send_due_quietly()  # a catch-up run inside the window sends at once
        if config.reconcile_after_day_end:
            reconciliation.after_day_end(business_date)

    built = Services(
        settings=config,
        loans=loans,
        payments=PaymentService(payments=DynamoPaymentRepository(), loans=loans, metrics=metrics),
        auth=AuthService(
            users=users,
            throttle=DynamoLoginThrottle(),
            metrics=metrics,
            secret=secret,
            ttl_seconds=config.token_ttl_seconds,
            max_failures=config.login_max_failures,
            window_seconds=config.login_window_seconds,
            iterations=config.password_hash_iterations,
            user_cache_seconds=config.user_cache_seconds,
        ),
        audit=audit,
        health=HealthProbe(config),
        jwt_secret=secret,
        idempotency_store=cache(partial(idempotency_store, config)),
        flags=flags,
        runs=runs,
        delinquency=delinquency,
        dpd_job=DayEndService(
            store=delinquency,
            runs=runs,
            flags=flags,
            metrics=metrics,
            watch_shards=WATCH_SHARDS,
            on_completed=completed,
            dispatcher=LambdaJobDispatcher(),
            reminders=reminder_store,
            portfolio=portfolio,
        ),
        completed_through=completed_through,
        metrics=metrics,
        denials=loans.denials,
        reassignment=ReassignmentService(loans=loans),
        dashboard=DashboardService(portfolio=portfolio),
        reconciliation=reconciliation,
        reminders=reminders,
        scoring=ScoringService(scores=DynamoScoreStore(), live=DynamoLiveCollections(), flags=flags),
        digest=DigestService(
            runs=runs,
            audit=audit,
            reminders=reminder_store,
            reconciliations=DynamoReconciliationRuns(),
            publisher=SnsAlertPublisher(config),
            metrics=metrics,
            stage=config.stage,
        ),
    )
    built.users = UserService(users=users, auth=built.auth, reassignment=built.reassignment, loans=loans.loans)
    return built


def services() -> Services:
    global _services
    if _services is None:
        _services = build(settings())
    return _services


def reset() -> None:
    global _services
    _services = None
    reset_settings()
