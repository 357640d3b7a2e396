"""An alarm is only real if its metric is emitted.

Every CloudWatch alarm in infra/template.json that watches the application's own namespace
(``LoanCRM/<stage>``) is read from the template when the tests are collected, and for each one a driver
breaks the product the way production breaks (a storage call refused, a guess at a password, a UTR sent
twice, a corrupted counter, a topic that refuses a publish...) through the real code path: the API
(``api`` fixture) or a Lambda handler. The EMF lines the path prints are then held against the alarm
exactly as CloudWatch would hold them: the same namespace, a dimension set equal to the alarm's (names
and values; CloudWatch matches the whole set, so one extra dimension is a different metric), the same
unit if the alarm names one, and the values, aggregated with the alarm's statistic, reaching its
threshold under its comparison.

A new custom-metric alarm without a driver fails ``test_every_custom_metric_alarm_has_a_driver``; a
driver left behind for a metric no alarm watches fails ``test_no_driver_without_an_alarm``.

Breakages are injected below the adapters, at botocore (:func:`refusing`), so that the storage and SNS
adapters and their error mapping run as they do in AWS; moto answers everything else.
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import math
import operator
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from chalice.local import LambdaEventConverter

import app as app_module
from chalicelib import wiring
from chalicelib.clock import IST
from chalicelib.config import settings
from chalicelib.domain.flags import FlagName
from chalicelib.domain.reminders import MAX_SEND_ATTEMPTS, RETRY_AFTER_MINUTES
from chalicelib.jobs import lambda_handlers
from chalicelib.wiring import services
from infra.provision import load_template, resolve
from tests.integration.api_helpers import (
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    emf_documents,
    imported_body,
    loan_body,
)
from tests.integration.test_dpd_api import LambdaContext
from tests.integration.test_reconciliation import plant_counter_drift
from tests.integration.test_reminders import run_for, send_at

APP_NAMESPACE_PREFIX = "LoanCRM/"
"""What the application's own namespace starts with once ``${Stage}`` is substituted (chalicelib.wiring
builds ``LoanCRM/<stage>``); alarms on AWS namespaces (AWS/DynamoDB, AWS/Backup) are not ours to drive."""

TODAY = "2026-03-15"
"""The IST date of api_helpers.FROZEN_AT."""
OVERDUE_ROWS = [("2025-12-01", 50_000, 2_000), ("2026-06-01", 50_000, 2_000)]
"""dpd 104 on 14 Mar 2026: the day-end run escalates this loan."""
NIGHT_RUN = {"scheduled_time": "2026-03-14T19:00:00Z"}
"""The Scheduler's 00:30 IST firing on 15 Mar, which closes 14 Mar."""
MORNING_CHECK = {"check": "completed", "scheduled_time": "2026-03-15T00:30:00Z"}
"""The Scheduler's 06:00 IST check on 15 Mar of the night's run for 14 Mar."""
DIGEST_TIME = {"scheduled_time": "2026-03-15T03:30:00Z"}
"""The Scheduler's 09:00 IST firing of the morning digest on 15 Mar (about 14 Mar)."""


# --- the alarms, as the template states them ------------------------------------------------------------


@dataclass(frozen=True)
class Watched:
    """One metric an alarm watches in the application's namespace: the alarm's own metric, or one
    ``MetricStat`` of a metric-math alarm (then ``query_id`` names it)."""

    alarm_id: str
    query_id: str | None
    metric_name: str
    namespace: Any
    """As written in the template (usually ``{"Fn::Sub": "LoanCRM/${Stage}"}``); see :meth:`namespace_for`."""
    dimensions: tuple[tuple[str, Any], ...]
    statistic: str
    unit: str | None
    threshold: float
    comparison: str
    threshold_on: str
    """What the alarm compares with its threshold: ``metric``, this metric itself; ``sum``, the sum of
    every metric of a ``SUM(METRICS())`` alarm, this one included; ``expression``, some other metric-math
    expression, which this test does not evaluate (it then only asks that the path moves the metric)."""
    missing_data: str = "missing"
    """The alarm's TreatMissingData: ``breaching`` means a healthy path must report too (a 0)."""

    @property
    def case_id(self) -> str:
        return self.alarm_id if self.query_id is None else f"{self.alarm_id}.{self.query_id}"

    def namespace_for(self, stage: str) -> Any:
        return resolve(self.namespace, stage)

    @property
    def events_needed(self) -> int:
        """How many one-count events a path must cause for the alarm to fire in one period (a Sum of
        counts; other statistics of a count are reached by one event)."""
        if self.threshold_on == "expression" or self.statistic != "Sum":
            return 1
        if self.comparison == "GreaterThanThreshold":
            return max(1, math.floor(self.threshold) + 1)
        return max(1, math.ceil(self.threshold))


def _dimensions(raw: list[dict[str, Any]] | None) -> tuple[tuple[str, Any], ...]:
    return tuple((d["Name"], d["Value"]) for d in raw or [])


def _ours(namespace: Any) -> bool:
    resolved = resolve(namespace, "stage")
    return isinstance(resolved, str) and resolved.startswith(APP_NAMESPACE_PREFIX)


def watched_metrics(template: dict[str, Any]) -> list[Watched]:
    """Every metric of the application's namespace an alarm of ``template`` watches, in template order."""
    found: list[Watched] = []
    for alarm_id, resource in template["Resources"].items():
        # Some resources are partial overlays on what Chalice generates and carry no Type: not alarms.
        if resource.get("Type") != "AWS::CloudWatch::Alarm":
            continue
        props = resource["Properties"]
        common = {
            "alarm_id": alarm_id,
            "threshold": float(props["Threshold"]) if "Threshold" in props else math.nan,
            "comparison": props.get("ComparisonOperator", ""),
            "missing_data": props.get("TreatMissingData", "missing"),
        }
        if "MetricName" in props:
            if _ours(props.get("Namespace")):
                found.append(
                    Watched(
                        query_id=None,
                        metric_name=props["MetricName"],
                        namespace=props["Namespace"],
                        dimensions=_dimensions(props.get("Dimensions")),
                        statistic=props.get("Statistic") or props.get("ExtendedStatistic", ""),
                        unit=props.get("Unit"),
                        threshold_on="metric",
                        **common,
                    )
                )
            continue
        queries = props.get("Metrics") or []
        stats = [q for q in queries if "MetricStat" in q]
        # CloudWatch compares the threshold with the one query that returns data.
        returned = [q for q in queries if q.get("ReturnData", True)]
        summed = (
            len(returned) == 1
            and "".join(str(returned[0].get("Expression", "")).split()).upper() == "SUM(METRICS())"
            and all(_ours(q["MetricStat"]["Metric"].get("Namespace")) for q in stats)
        )
        for query in stats:
            stat = query["MetricStat"]
            if not _ours(stat["Metric"].get("Namespace")):
                continue
            direct = len(returned) == 1 and returned[0] is query
            found.append(
                Watched(
                    query_id=query["Id"],
                    metric_name=stat["Metric"]["MetricName"],
                    namespace=stat["Metric"]["Namespace"],
                    dimensions=_dimensions(stat["Metric"].get("Dimensions")),
                    statistic=stat["Stat"],
                    unit=stat.get("Unit"),
                    threshold_on="metric" if direct else "sum" if summed else "expression",
                    **common,
                )
            )
    return found


WATCHED = watched_metrics(load_template())


# --- what the code printed ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Emission:
    """One metric of one EMF document."""

    name: str
    namespace: str
    dimension_sets: tuple[frozenset[str], ...]
    document: dict[str, Any]
    unit: str | None
    values: tuple[float, ...]

    def describe(self) -> str:
        sets = [sorted(s) for s in self.dimension_sets]
        values = {name: self.document.get(name) for s in self.dimension_sets for name in sorted(s)}
        return f"{self.name} in {self.namespace!r}, dimension sets {sets} = {values}, unit {self.unit}, {self.values}"


def emissions(stdout: str) -> list[Emission]:
    """Every metric of every EMF document printed (powertools writes one JSON document per line)."""
    found: list[Emission] = []
    for doc in emf_documents(stdout):
        for directive in doc.get("_aws", {}).get("CloudWatchMetrics", []):
            sets = tuple(frozenset(s) for s in directive.get("Dimensions", []))
            for metric in directive.get("Metrics", []):
                raw = doc.get(metric["Name"])
                # A metric named without a number is dropped by CloudWatch: no data point.
                points = raw if isinstance(raw, list) else [raw]
                values = tuple(float(v) for v in points if isinstance(v, int | float))
                found.append(
                    Emission(metric["Name"], directive.get("Namespace", ""), sets, doc, metric.get("Unit"), values)
                )
    return found


def aggregate(statistic: str, values: list[float]) -> float:
    """The alarm's statistic over every data point of one period (a driver's output is seconds long)."""
    if not values:
        return 0.0 if statistic in ("Sum", "SampleCount") else math.nan
    statistics: dict[str, Callable[[list[float]], float]] = {
        "Sum": sum,
        "SampleCount": lambda vs: float(len(vs)),
        "Maximum": max,
        "Minimum": min,
        "Average": lambda vs: sum(vs) / len(vs),
    }
    if statistic not in statistics:
        pytest.fail(f"statistic {statistic!r} is not one this test can check; extend aggregate()")
    return float(statistics[statistic](values))


COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    "GreaterThanOrEqualToThreshold": operator.ge,
    "GreaterThanThreshold": operator.gt,
    "LessThanThreshold": operator.lt,
    "LessThanOrEqualToThreshold": operator.le,
}


def breaches(watched: Watched, value: float) -> bool:
    if watched.comparison not in COMPARISONS:
        pytest.fail(f"{watched.case_id}: comparison {watched.comparison!r} is not one this test can check")
    return COMPARISONS[watched.comparison](value, watched.threshold)


def matching(watched: Watched, stdout: str, stage: str) -> tuple[list[Emission], list[Emission]]:
    """The emissions CloudWatch would file under the alarm's metric, and every emission of that name."""
    namespace = watched.namespace_for(stage)
    wanted = {name: resolve(value, stage) for name, value in watched.dimensions}
    named = [e for e in emissions(stdout) if e.name == watched.metric_name]
    hits = [
        e
        for e in named
        if e.namespace == namespace
        and frozenset(wanted) in e.dimension_sets
        and all(e.document.get(name) == value for name, value in wanted.items())
        and (watched.unit is None or e.unit == watched.unit)
    ]
    return hits, named


def alarm_value(watched: Watched, stdout: str, stage: str, among: list[Watched] | None = None) -> float:
    """What the alarm compares with its threshold, from what ``stdout`` emitted in one period: the
    watched metric's statistic, or for a ``SUM(METRICS())`` alarm the sum of its metrics' statistics
    (a metric with no data point adds nothing, as in CloudWatch)."""
    metrics = [watched]
    if watched.threshold_on == "sum":
        metrics = [w for w in (WATCHED if among is None else among) if w.alarm_id == watched.alarm_id]
    total = 0.0
    for metric in metrics:
        hits, _named = matching(metric, stdout, stage)
        if hits:
            total += aggregate(metric.statistic, [v for e in hits for v in e.values])
    return total


# --- breaking things as production breaks them -----------------------------------------------------------


@contextmanager
def refusing(
    service: str,
    operation: str | None,
    code: str,
    table: str | None = None,
    when: Callable[[dict[str, Any]], bool] | None = None,
) -> Iterator[list[str]]:
    """Make every AWS call of ``service`` (``operation``, or any) fail with the error AWS answers with
    ``code``; for DynamoDB only the calls that touch ``table`` (short name: ``loans``, ``audit``...), and
    only the calls whose parameters ``when`` accepts, if given.
    Patched where every botocore client makes its calls, so the adapters' own handling (PynamoDB's
    wrapping, ``storage_call``, the publisher's retries) runs as it would in AWS. Yields the refused
    operations, so a driver can tell it hit the path it meant to."""
    real = BaseClient._make_api_call
    refused: list[str] = []
    table_name = settings().table_name(table) if table else None

    def touches(params: dict[str, Any]) -> bool:
        if table_name is None:
            return True
        named = {params.get("TableName")}
        for item in params.get("TransactItems", []):
            named |= {action.get("TableName") for action in item.values()}
        named |= set(params.get("RequestItems", {}))
        return table_name in named

    def make_api_call(client: BaseClient, operation_name: str, params: dict[str, Any]) -> Any:
        if (
            client.meta.service_model.service_name == service
            and operation in (None, operation_name)
            and touches(params)
            and (when is None or when(params))
        ):
            refused.append(operation_name)
            error = {"Error": {"Code": code, "Message": f"refused by the test ({code})"}}
            raise ClientError(error, operation_name)
        return real(client, operation_name, params)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BaseClient, "_make_api_call", make_api_call)
        yield refused


@dataclass
class Scene:
    """What a driver works with; ``begin()`` drops what the set-up printed, ``printed()`` returns what
    the breakage printed since."""

    api: Api
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    def begin(self) -> None:
        self.capsys.readouterr()

    def printed(self) -> str:
        return self.capsys.readouterr().out


Driver = Callable[[Scene, Watched], str]


def _payment(loan_id: str, utr: str) -> dict[str, Any]:
    return {"loan_id": loan_id, "utr": utr, "amount_paise": 10_000, "payment_date": TODAY, "mode": "UPI"}


def financial_guard(scene: Scene, _watched: Watched) -> str:
    """A manager's PATCH that tries to set the loan's dpd: refused whole (403)."""
    loan_id = scene.api.create_loan()["loan_id"]
    scene.begin()
    reply = scene.api.patch(f"/api/v1/loans/{loan_id}", {"dpd": 0}, as_="manager")
    assert reply.status == 403, reply.body[:300]
    return scene.printed()


def auth_failed(scene: Scene, watched: Watched) -> str:
    """Wrong passwords for admin1 from as many addresses as it takes: the login throttle allows
    ``max_failures`` guesses per username and address, and a guessing botnet has many addresses."""
    per_source = services().auth.max_failures
    scene.begin()
    for n in range(watched.events_needed):
        scene.monkeypatch.setattr(LambdaEventConverter, "LOCAL_SOURCE_IP", f"203.0.113.{n // per_source + 1}")
        reply = scene.api.post("/api/v1/auth/token", {"username": "admin1", "password": "guess"}, as_=None)
        assert reply.status == 401, reply.body[:300]
    return scene.printed()


def payment_failed_posting(scene: Scene, _watched: Watched) -> str:
    """The payment's transaction is refused by DynamoDB for a reason that is not a busy table (here an
    oversized item): a 500, counted."""
    loan_id = scene.api.create_loan()["loan_id"]
    scene.begin()
    with refusing("dynamodb", "TransactWriteItems", "ValidationException") as refused:
        reply = scene.api.post("/api/v1/payments", _payment(loan_id, "UTRALARM0001"))
    assert refused and reply.status == 500, reply.body[:300]
    return scene.printed()


def payment_failed_reversal(scene: Scene, _watched: Watched) -> str:
    """The same refusal on a manager's reversal of a posted payment."""
    loan_id = scene.api.create_loan()["loan_id"]
    posted = scene.api.post("/api/v1/payments", _payment(loan_id, "UTRALARM0002"))
    assert posted.status == 201, posted.body[:300]
    scene.begin()
    with refusing("dynamodb", "TransactWriteItems", "ValidationException") as refused:
        path = f"/api/v1/payments/{posted.json['payment_id']}/reverse"
        reply = scene.api.post(path, {"reason": "cheque bounced"}, as_="manager")
    assert refused and reply.status == 500, reply.body[:300]
    return scene.printed()


def duplicate_utr(scene: Scene, watched: Watched) -> str:
    """One UTR posted, then sent again as often as the alarm needs: each a 409 DUPLICATE_UTR. Every
    duplicate, sequential or concurrent, is refused by the same conditional claim of the UTR in the
    payment's transaction, so sequential attempts drive the same code."""
    loan_id = scene.api.create_loan()["loan_id"]
    assert scene.api.post("/api/v1/payments", _payment(loan_id, "UTRALARM0003")).status == 201
    scene.begin()
    for _ in range(watched.events_needed):
        reply = scene.api.post("/api/v1/payments", _payment(loan_id, "UTRALARM0003"))
        assert reply.status == 409, reply.body[:300]
    return scene.printed()


def dependency_unavailable(scene: Scene, watched: Watched) -> str:
    """The loans table throttles: every read of a loan is a 503, as often as the alarm needs."""
    loan_id = scene.api.create_loan()["loan_id"]
    scene.begin()
    with refusing("dynamodb", None, "ProvisionedThroughputExceededException", table="loans"):
        for _ in range(watched.events_needed):
            reply = scene.api.get(f"/api/v1/loans/{loan_id}")
            assert reply.status == 503, reply.body[:300]
    return scene.printed()


def dpd_run_failed(scene: Scene, _watched: Watched) -> str:
    """The night's run cannot scan the loans table: recorded FAILED, the invocation fails (Lambda retries)."""
    scene.api.create_loan()
    scene.begin()
    with (
        refusing("dynamodb", "Scan", "ProvisionedThroughputExceededException", table="loans") as refused,
        pytest.raises(lambda_handlers.DpdRunFailedError),
    ):
        lambda_handlers.dpd_job(NIGHT_RUN, LambdaContext())
    assert refused
    return scene.printed()


def dpd_run_missing(scene: Scene, _watched: Watched) -> str:
    """The night's run failed (its scan refused), so the 06:00 check finds the date not completed."""
    scene.api.create_loan()
    with (
        refusing("dynamodb", "Scan", "ProvisionedThroughputExceededException", table="loans"),
        pytest.raises(lambda_handlers.DpdRunFailedError),
    ):
        lambda_handlers.dpd_job(NIGHT_RUN, LambdaContext())
    scene.begin()
    assert lambda_handlers.dpd_job(MORNING_CHECK, LambdaContext())["completed"] is False
    return scene.printed()


def escalation_failed(scene: Scene, _watched: Watched) -> str:
    """A loan at dpd 104 is escalated by the night's run, and the write of its escalation (loan, legal
    case and audit entries, one transaction) is refused: the run fails, the escalation is counted."""
    scene.api.create_loan(imported_body(OVERDUE_ROWS))
    scene.begin()
    with (
        refusing("dynamodb", "TransactWriteItems", "ValidationException", table="legal-cases") as refused,
        pytest.raises(lambda_handlers.DpdRunFailedError),
    ):
        lambda_handlers.dpd_job(NIGHT_RUN, LambdaContext())
    assert refused
    return scene.printed()


def reconciliation_mismatch(scene: Scene, _watched: Watched) -> str:
    """A counter of the book changed outside the API (a console edit), then the reconciliation job."""
    scene.api.create_loan()
    plant_counter_drift(scene.api.stage, "book", "loans_total", 3)
    scene.begin()
    report = lambda_handlers.reconciliation_job({}, LambdaContext())
    assert (report["status"], report["mismatch_count"]) == ("COMPLETED", 1), report
    return scene.printed()


def reconciliation_failed_run(scene: Scene, _watched: Watched) -> str:
    """The reconciliation job cannot scan the UTR claims: the run is recorded FAILED."""
    scene.api.create_loan()
    scene.begin()
    with refusing("dynamodb", "Scan", "ProvisionedThroughputExceededException", table="utr-claims") as refused:
        report = lambda_handlers.reconciliation_job({}, LambdaContext())
    assert refused and report["status"] == "FAILED", report
    return scene.printed()


def reconciliation_failed_after_day_end(scene: Scene, _watched: Watched) -> str:
    """With reconciliation after the day-end run on (as deployed), the run cannot even be recorded (its
    table refuses the writes): the day-end run still completes, the missing reconciliation is counted."""
    scene.monkeypatch.setenv("RECONCILE_AFTER_DAY_END", "true")
    wiring.reset()
    scene.api.create_loan()
    scene.begin()
    with refusing("dynamodb", None, "ProvisionedThroughputExceededException", table="reconciliations") as refused:
        answer = lambda_handlers.dpd_job(NIGHT_RUN, LambdaContext())
    assert refused and answer["outcome"] == "COMPLETED", answer
    return scene.printed()


def scoring_failed(scene: Scene, _watched: Watched) -> str:
    """The reassignments the scores need (an audit index) cannot be read: the reconciliation completes
    and the scores are not written."""
    scene.api.create_loan(imported_body([("2026-03-05", 90_000, 10_000)], collector_id="collector1"))
    scene.begin()
    with refusing("dynamodb", "Query", "ProvisionedThroughputExceededException", table="audit") as refused:
        report = lambda_handlers.reconciliation_job({}, LambdaContext())
    assert refused and (report["status"], report["mismatch_count"]) == ("COMPLETED", 0), report
    return scene.printed()


def reminders_failed(scene: Scene, _watched: Watched) -> str:
    """The reminders topic refuses every publish: the sender's runs retry the reminder after their
    pauses until its last attempt fails it."""
    scene.api.create_loan()  # instalment 1 due 5 Apr: a PRE_DUE_3 reminder is queued by the run for 2 Apr
    run_for(scene.api, "2026-04-02")
    scene.begin()
    at = dt.datetime(2026, 4, 3, 9, 0, tzinfo=IST)
    with refusing("sns", "Publish", "Throttling") as refused:
        for _ in range(MAX_SEND_ATTEMPTS):
            send_at(scene.api, at)
            at += dt.timedelta(minutes=max(RETRY_AFTER_MINUTES) + 4)
    assert len(refused) == MAX_SEND_ATTEMPTS
    return scene.printed()


def audit_write_failed(scene: Scene, _watched: Watched) -> str:
    """A collector tries to create a loan (403, a denial to audit) while the audit table throttles: the
    refusal stands, the lost audit entry is counted."""
    scene.begin()
    with refusing("dynamodb", "PutItem", "ProvisionedThroughputExceededException", table="audit") as refused:
        reply = scene.api.post("/api/v1/loans", loan_body(), as_="collector")
    assert refused and reply.status == 403, reply.body[:300]
    return scene.printed()


def _night_run() -> None:
    lambda_handlers.dpd_job(NIGHT_RUN, LambdaContext())


def _reconciliation() -> None:
    lambda_handlers.reconciliation_job({}, LambdaContext())


def _reminder_sender() -> None:
    lambda_handlers.reminders_job({}, LambdaContext())


FLAG_READERS: dict[str, Callable[[], None]] = {
    "CRON_ENABLED": _night_run,
    "ESCALATION_ENABLED": _night_run,
    "SCORING_ENABLED": _reconciliation,
    "REMINDERS_ENABLED": _reminder_sender,
}
"""The automation that reads each kill switch fresh, as it is invoked on its schedule."""


def flag_read_error(scene: Scene, watched: Watched) -> str:
    """SSM throttles the reads of the flag the alarm's metric names while the automation that reads it
    runs, as often as the alarm needs (a retried or repeated invocation): the automation treats the flag
    as off, each read is counted. Without a ``flag`` dimension every flag's read is refused."""
    flag = dict(watched.dimensions).get("flag")
    reader = FLAG_READERS.get(flag or "", _night_run)
    scene.api.create_loan()
    scene.begin()
    refused_name = (lambda params: str(params.get("Name", "")).endswith(f"/flags/{flag}")) if flag else None
    with refusing("ssm", None, "ThrottlingException", when=refused_name) as refused:
        for _ in range(watched.events_needed):
            reader()
    assert refused, f"nothing read the flag {flag}"
    return scene.printed()


def digest_failed(scene: Scene, _watched: Watched) -> str:
    """The 09:00 digest cannot be sent: SNS refuses the publish to the alerts topic. The invocation fails
    (so Lambda retries it) after counting."""
    try:
        digest = importlib.import_module("chalicelib.jobs.digest")
    except ModuleNotFoundError:
        pytest.fail("an alarm watches DigestFailed but chalicelib.jobs.digest does not exist: nothing emits it")
    scene.api.create_loan()
    scene.begin()
    with refusing("sns", "Publish", "Throttling") as refused, pytest.raises(ClientError):
        digest.digest_job(DIGEST_TIME, LambdaContext())
    assert refused, "the digest never tried to publish"
    return scene.printed()


DRIVERS: dict[str, dict[str, Driver]] = {
    "FinancialGuardTriggered": {"patch of a protected field": financial_guard},
    "AuthFailed": {"wrong passwords": auth_failed},
    "PaymentFailed": {"posting": payment_failed_posting, "reversal": payment_failed_reversal},
    "DuplicateUtr": {"UTR sent again": duplicate_utr},
    "DependencyUnavailable": {"loans table throttling": dependency_unavailable},
    "DpdRunFailed": {"scan refused": dpd_run_failed},
    "DpdRunMissing": {"06:00 check after a failed night": dpd_run_missing},
    "EscalationFailed": {"escalation write refused": escalation_failed},
    "ReconciliationMismatch": {"corrupted book counter": reconciliation_mismatch},
    "ReconciliationFailed": {
        "run fails": reconciliation_failed_run,
        "cannot start after day-end": reconciliation_failed_after_day_end,
    },
    "ScoringFailed": {"reassignments unreadable": scoring_failed},
    "RemindersFailed": {"publish refused to the last attempt": reminders_failed},
    "AuditWriteFailed": {"denial not audited": audit_write_failed},
    "FlagReadError": {"SSM throttling": flag_read_error},
    "DigestFailed": {"publish refused": digest_failed},
}
"""Metric name -> the code paths that must fire its alarm, by a short label. Each path must reach the
threshold on its own."""


def _cases() -> list[Any]:
    cases = []
    for watched in WATCHED:
        paths: dict[str, Driver | None] = {**DRIVERS.get(watched.metric_name, {})} or {"no driver": None}
        for label, driver in paths.items():
            cases.append(pytest.param(watched, driver, id=f"{watched.case_id}[{label}]"))
    return cases


# --- the tests ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("watched", "driver"), _cases())
def test_the_path_emits_what_the_alarm_watches(
    api: Api,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    watched: Watched,
    driver: Driver | None,
) -> None:
    if driver is None:
        pytest.fail(f"{watched.case_id} watches {watched.metric_name}, which no driver in DRIVERS triggers")
    stage = settings().stage
    assert stage == api.stage
    printed = driver(Scene(api, monkeypatch, capsys), watched)

    hits, named = matching(watched, printed, stage)
    assert named, f"{watched.metric_name} was never emitted on this path"
    wanted = {name: resolve(value, stage) for name, value in watched.dimensions}
    assert hits, (
        f"{watched.metric_name} was emitted, but never as {watched.case_id} watches it: namespace "
        f"{watched.namespace_for(stage)!r}, exactly the dimensions {wanted}"
        + (f", unit {watched.unit}" if watched.unit else "")
        + ". Emitted:\n"
        + "\n".join(e.describe() for e in named)
    )
    if watched.threshold_on == "expression":
        # The alarm compares an expression this test does not evaluate; the path must at least move the metric.
        value = aggregate(watched.statistic, [v for e in hits for v in e.values])
        assert value > 0, f"{watched.statistic} of {watched.metric_name} on this path is {value}"
        return
    value = alarm_value(watched, printed, stage)
    assert breaches(watched, value), (
        f"{watched.case_id} sees {value} on this path ({watched.statistic} of {watched.metric_name}"
        + (", summed with the alarm's other metrics" if watched.threshold_on == "sum" else "")
        + f"); it needs {watched.comparison} {watched.threshold}"
    )


def test_a_completed_night_does_not_look_missing(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    """The 06:00 check after a night that completed: if it reports, it reports 0, which never reaches the
    missing-run alarm; and it must report when the alarm treats missing data as breaching (the alarm
    then also catches a watchdog that stopped running), or every healthy morning would page."""
    alarms = [w for w in WATCHED if w.metric_name == "DpdRunMissing"]
    assert alarms, "no alarm watches DpdRunMissing"
    api.create_loan()
    assert lambda_handlers.dpd_job(NIGHT_RUN, LambdaContext())["outcome"] == "COMPLETED"
    capsys.readouterr()
    assert lambda_handlers.dpd_job(MORNING_CHECK, LambdaContext())["completed"] is True
    printed = capsys.readouterr().out
    for watched in alarms:
        hits, named = matching(watched, printed, api.stage)
        if watched.missing_data == "breaching":
            assert hits, f"{watched.case_id} treats no data as breaching, and the check reported none: {named}"
        assert all(v == 0 for e in hits for v in e.values), [e.describe() for e in hits]
        if hits and watched.threshold_on != "expression":
            assert not breaches(watched, alarm_value(watched, printed, api.stage))


def test_every_custom_metric_alarm_has_a_driver() -> None:
    assert WATCHED, "no alarm of the template watches the application's namespace: is the parsing broken?"
    missing = sorted({w.case_id for w in WATCHED if w.metric_name not in DRIVERS})
    assert missing == [], f"alarms on metrics no driver triggers: {missing}; add a driver to DRIVERS"


def test_no_driver_without_an_alarm() -> None:
    alarmed = {w.metric_name for w in WATCHED}
    orphans = sorted(set(DRIVERS) - alarmed)
    assert orphans == [], f"drivers for metrics no alarm of infra/template.json watches: {orphans}"


def test_every_flag_has_its_read_errors_alarmed() -> None:
    """FlagReadError carries the flag as a dimension, so an alarm sees only the flags it names: a flag
    added to the code without a metric in the alarm would fail unseen."""
    alarmed = {dict(w.dimensions).get("flag") for w in WATCHED if w.metric_name == "FlagReadError"}
    assert {flag.value for flag in FlagName} <= alarmed, f"flags whose read errors an alarm sees: {alarmed}"


def _math_alarm(threshold: float, queries: list[dict[str, Any]]) -> dict[str, Any]:
    properties = {"Threshold": threshold, "ComparisonOperator": "GreaterThanOrEqualToThreshold", "Metrics": queries}
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": properties}


def _stat(query_id: str, name: str, namespace: Any = None, **dimensions: str) -> dict[str, Any]:
    metric = {
        "Namespace": namespace or {"Fn::Sub": "LoanCRM/${Stage}"},
        "MetricName": name,
        "Dimensions": [{"Name": "service", "Value": "loan-crm"}]
        + [{"Name": k, "Value": v} for k, v in dimensions.items()],
    }
    return {"Id": query_id, "MetricStat": {"Metric": metric, "Stat": "Sum", "Period": 300}, "ReturnData": False}


def test_metric_math_alarms_are_read_per_metric_stat() -> None:
    """The parser and the evaluation on made-up metric-math alarms: each MetricStat of our namespace is
    a watched metric, AWS namespaces are left out; the threshold applies to the query that returns data
    when that is a metric, to the sum of the metrics under ``SUM(METRICS())``, and to nothing this test
    evaluates under any other expression."""
    template = {
        "Resources": {
            "Ratio": _math_alarm(
                0.5,
                [
                    _stat("f", "PaymentFailed"),
                    _stat("p", "PaymentPosted"),
                    _stat("t", "Errors", namespace="AWS/Lambda"),
                    {"Id": "r", "Expression": "f / (f + p)", "ReturnData": True},
                ],
            ),
            "Direct": _math_alarm(3, [{**_stat("d", "DuplicateUtr"), "ReturnData": True}]),
            "Summed": _math_alarm(
                2, [_stat("a", "FlagReadError", flag="A"), _stat("b", "FlagReadError", flag="B"), SUM_OF_METRICS]
            ),
            "NotOurs": {"Type": "AWS::CloudWatch::Alarm", "Properties": {"Namespace": "AWS/Lambda", "MetricName": "X"}},
            "Overlay": {"Properties": {"Environment": {}}},
        }
    }
    found = watched_metrics(template)
    assert [(w.case_id, w.metric_name, w.threshold_on) for w in found] == [
        ("Ratio.f", "PaymentFailed", "expression"),
        ("Ratio.p", "PaymentPosted", "expression"),
        ("Direct.d", "DuplicateUtr", "metric"),
        ("Summed.a", "FlagReadError", "sum"),
        ("Summed.b", "FlagReadError", "sum"),
    ]
    assert [w.events_needed for w in found] == [1, 1, 3, 2, 2]
    assert found[0].namespace_for("prod") == "LoanCRM/prod"
    assert found[3].dimensions == (("service", "loan-crm"), ("flag", "A"))

    def line(flag: str) -> str:
        aws = {
            "Timestamp": 0,
            "CloudWatchMetrics": [
                {
                    "Namespace": "LoanCRM/prod",
                    "Dimensions": [["service", "flag"]],
                    "Metrics": [{"Name": "FlagReadError"}],
                }
            ],
        }
        return json.dumps({"_aws": aws, "service": "loan-crm", "flag": flag, "FlagReadError": [1.0]})

    summed_a = found[3]
    assert alarm_value(summed_a, line("A"), "prod", among=found) == 1
    assert alarm_value(summed_a, "\n".join([line("A"), line("B"), line("C")]), "prod", among=found) == 2
    assert breaches(summed_a, 2) and not breaches(summed_a, 1)
    assert alarm_value(summed_a, line("A"), "dev", among=found) == 0  # another stage's namespace


SUM_OF_METRICS = {"Id": "e1", "Expression": "SUM( METRICS() )", "ReturnData": True}


def test_the_deployed_service_dimension_is_the_one_the_alarms_name() -> None:
    """The ``service`` dimension is the Lambda environment's POWERTOOLS_SERVICE_NAME (chalicelib.adapters.
    metrics): every value the Chalice config or a template override gives it must be the alarms' value."""
    alarm_values = {resolve(v, "stage") for w in WATCHED for n, v in w.dimensions if n == "service"}
    assert len(alarm_values) == 1, alarm_values
    (expected,) = alarm_values
    config = json.loads((Path(app_module.__file__).parent / ".chalice" / "config.json").read_text(encoding="utf-8"))
    environments = [config.get("environment_variables", {})]
    for stage in config.get("stages", {}).values():
        environments.append(stage.get("environment_variables", {}))
        environments += [f.get("environment_variables", {}) for f in stage.get("lambda_functions", {}).values()]
    for resource in load_template()["Resources"].values():
        environments.append(resource.get("Properties", {}).get("Environment", {}).get("Variables", {}))
    given = {env["POWERTOOLS_SERVICE_NAME"] for env in environments if "POWERTOOLS_SERVICE_NAME" in env}
    assert given <= {expected}, given
    assert config.get("environment_variables", {}).get("POWERTOOLS_SERVICE_NAME", expected) == expected
