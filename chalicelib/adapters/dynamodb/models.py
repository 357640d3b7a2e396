"""PynamoDB models. Keys and indexes must equal infra/template.json (a test compares them); table
names and the endpoint are bound at run time by :func:`bind` from settings, never hard-coded."""

from __future__ import annotations

import os
import threading
from typing import Any

import botocore.loaders
import botocore.session
import pynamodb.connection.base
from pynamodb.attributes import (
    BinaryAttribute,
    BooleanAttribute,
    MapAttribute,
    UnicodeAttribute,
    VersionAttribute,
)
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, IncludeProjection, KeysOnlyProjection
from pynamodb.models import Model

from chalicelib.adapters.dynamodb.attributes import (
    AllocationAttribute,
    DateAttribute,
    IntegerAttribute,
    JsonAttribute,
    LedgerAttribute,
    ScheduleAttribute,
)
from chalicelib.config import Settings
from chalicelib.domain.portfolio import COLLECTION_COUNTERS, LOAN_COUNTERS

_SERVICE_MODELS = botocore.loaders.create_loader(os.environ.get("AWS_DATA_PATH"))


def _session() -> botocore.session.Session:
    """A botocore session whose service models come from one loader shared by the whole process.

    PynamoDB gives each model's connection a session of its own, per thread, and each new session
    parses DynamoDB's service model and endpoint files again: about 50 ms of CPU each, so a cold
    container's first request (which touches three or four tables) paid it three or four times, and a
    day-end run once per table per worker thread (docs/architecture.md, "Cold start"). Credentials
    are still resolved per session, as before."""
    session = botocore.session.get_session()
    session.register_component("data_loader", _SERVICE_MODELS)
    return session


# PynamoDB takes its sessions from this module-level name; it offers no setting for it.
pynamodb.connection.base.get_session = _session  # type: ignore[attr-defined]

_own_client = pynamodb.connection.base.Connection.client
_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()
_generation = [0]
"""Moves on whenever the shared clients are dropped (a rebinding, a fork): a connection's own reference
to a client of an older generation is not used again."""


def _drop_clients() -> None:
    with _clients_lock:
        _clients.clear()
        _generation[0] += 1


def _usable(client: Any) -> bool:
    """False for a client that came up without credentials (a metadata-service hiccup): PynamoDB itself
    replaces such a client, and so does this."""
    return client is not None and not (client._request_signer and not client._request_signer._credentials)


def _shared_client(connection: pynamodb.connection.base.Connection) -> Any:
    """One botocore client per endpoint and settings for the whole process, not one per table.

    PynamoDB gives every model's connection (and every transaction) a client of its own. Creating one
    costs 35-55 ms of CPU, and each opens its own connection pool, so a cold container's first
    request, which reads three tables, paid that three times over (docs/architecture.md, "Cold
    start"). A botocore client is safe to share between threads once made; making it is not, hence
    the lock, taken only when a connection has no client of the current generation yet: PynamoDB asks
    for the client on every request, and the day-end run's segment threads make many. A forked child
    starts a new generation, so it never shares its parent's sockets."""
    mine = connection._client
    if getattr(connection, "_client_generation", None) == _generation[0] and _usable(mine):
        return mine
    key = (
        connection.region,
        connection.host,
        connection._connect_timeout_seconds,
        connection._read_timeout_seconds,
        connection._max_retry_attempts_exception,
        connection._max_pool_connections,
        str(connection._retry_configuration),
    )
    with _clients_lock:
        client = _clients.get(key)
        if not _usable(client):
            connection._client = None
            client = _clients[key] = _own_client.fget(connection)  # type: ignore[attr-defined]
        connection._client = client
        connection._client_generation = _generation[0]  # type: ignore[attr-defined]
        return client


pynamodb.connection.base.Connection.client = property(_shared_client)  # type: ignore[method-assign,assignment]
os.register_at_fork(after_in_child=_drop_clients)


class _Meta:
    table_name = "unbound"
    region = "ap-south-1"
    host: str | None = None
    # Fail over to a clear 503 quickly rather than holding a Lambda for the default minute.
    connect_timeout_seconds = 3
    read_timeout_seconds = 5
    max_retry_attempts = 3
    # Every table shares one client and so one connection pool (``_shared_client``): room for the
    # day-end run's segment threads and the reconciliation's, each with a request in flight.
    max_pool_connections = 32


class BorrowerMap(MapAttribute[str, Any]):
    name = UnicodeAttribute()
    phone = UnicodeAttribute()
    email = UnicodeAttribute(null=True)
    address = UnicodeAttribute(null=True)


LISTING_FILTERS = ("bucket", "classification", "status")
"""What the loan listings filter on, copied into the listing indexes beside their keys: DynamoDB filters a
page on them, and the listing then reads the loans themselves from the table (docs/architecture.md,
"Index projections")."""


class CollectorIndex(GlobalSecondaryIndex["LoanModel"]):
    """A collector's loans, for the listings. Keys and the listing filters only, not the loan: a whole-loan
    copy was rewritten by every write of the loan, the day-end run's included, although the collector
    rarely changes; now an entry is rewritten only when its collector, bucket, classification or status
    does, and costs one write unit however large the loan grows."""

    class Meta:
        index_name = "collector-list-index"
        projection = IncludeProjection(list(LISTING_FILTERS))

    collector_id = UnicodeAttribute(hash_key=True)
    loan_id = UnicodeAttribute(range_key=True)


class BucketIndex(GlobalSecondaryIndex["LoanModel"]):
    """The loans in a bucket, for the listings and ``ops check``: keys and the listing filters, as the
    collector index (an entry moves when the bucket changes, and nothing else rewrites it but a change of
    classification or status)."""

    class Meta:
        index_name = "bucket-list-index"
        projection = IncludeProjection([name for name in LISTING_FILTERS if name != "bucket"])  # its key

    bucket = UnicodeAttribute(hash_key=True)
    loan_id = UnicodeAttribute(range_key=True)


class WatchIndex(GlobalSecondaryIndex["LoanModel"]):
    """Sparse and keys-only: only ACTIVE loans whose delinquency can still change without a payment
    have a key, and only the key is copied (every loan write would otherwise rewrite the whole loan here).
    ``watch_key`` is ``YYYY-MM-DD#NN``: the watch date and a shard, so the loans falling due on a
    popular EMI date (the 5th) spread over several partitions and can be read in parallel; or
    ``PENDING#NN`` for a loan pending escalation, which every run reads (docs/day-end.md)."""

    class Meta:
        index_name = "watch-index"
        projection = KeysOnlyProjection()

    watch_key = UnicodeAttribute(hash_key=True)
    loan_id = UnicodeAttribute(range_key=True)


class DueIndex(GlobalSecondaryIndex["LoanModel"]):
    """Sparse, keys-only: ``due_key`` = ``YYYY-MM-DD#NN``, the next unpaid instalment's due date after the
    loan's evaluated date (and a watch shard), on ACTIVE loans. The day-end run finds the loans owed a
    pre-due reminder here (docs/reminders.md). The key moves only when the loan is written anyway."""

    class Meta:
        index_name = "due-index"
        projection = KeysOnlyProjection()

    due_key = UnicodeAttribute(hash_key=True)
    loan_id = UnicodeAttribute(range_key=True)


class ArrearsIndex(GlobalSecondaryIndex["LoanModel"]):
    """Sparse, keys-only: ``arrears_key`` = ``YYYY-MM-DD#NN``, the oldest unpaid due date of an ACTIVE loan
    in arrears: the day-end run finds the loans owed an overdue reminder (dpd 7, 15, 30) here."""

    class Meta:
        index_name = "arrears-index"
        projection = KeysOnlyProjection()

    arrears_key = UnicodeAttribute(hash_key=True)
    loan_id = UnicodeAttribute(range_key=True)


class LoanModel(Model):
    class Meta(_Meta):
        short_name = "loans"

    loan_id = UnicodeAttribute(hash_key=True)
    borrower = BorrowerMap()
    status = UnicodeAttribute()
    principal_paise = IntegerAttribute()
    annual_rate_bps = IntegerAttribute(null=True)
    disbursement_date = DateAttribute()
    schedule = ScheduleAttribute()
    ledger = LedgerAttribute(null=True)
    """The standing payments the schedule's paid amounts are replayed from (``domain.ledger``)."""
    outstanding_principal_paise = IntegerAttribute()
    overdue_paise = IntegerAttribute()
    dpd = IntegerAttribute()
    bucket = UnicodeAttribute()
    classification = UnicodeAttribute()
    npa_since = DateAttribute(null=True)
    dpd_as_of = DateAttribute()
    legal_escalated = BooleanAttribute(default=False)
    legal_escalated_on = DateAttribute(null=True)
    collector_id = UnicodeAttribute(null=True)
    branch = UnicodeAttribute(null=True)
    notes = UnicodeAttribute(null=True)
    watch_key = UnicodeAttribute(null=True)
    due_key = UnicodeAttribute(null=True)
    arrears_key = UnicodeAttribute(null=True)
    last_job_date = DateAttribute(null=True)
    """The business date of the last day-end run that wrote this loan (lets a resumed run recognise its
    own earlier writes)."""
    created_at = UnicodeAttribute()
    updated_at = UnicodeAttribute()
    version = VersionAttribute()

    collector_index = CollectorIndex()
    bucket_index = BucketIndex()
    watch_index = WatchIndex()
    due_index = DueIndex()
    arrears_index = ArrearsIndex()


class LoanPaymentsIndex(GlobalSecondaryIndex["PaymentModel"]):
    class Meta:
        index_name = "loan-index"
        projection = AllProjection()

    loan_id = UnicodeAttribute(hash_key=True)
    payment_id = UnicodeAttribute(range_key=True)


class PaymentModel(Model):
    class Meta(_Meta):
        short_name = "payments"

    payment_id = UnicodeAttribute(hash_key=True)
    loan_id = UnicodeAttribute()
    utr = UnicodeAttribute()
    amount_paise = IntegerAttribute()
    payment_date = DateAttribute()
    mode = UnicodeAttribute()
    status = UnicodeAttribute()
    posted_at = UnicodeAttribute()
    posted_by_sub = UnicodeAttribute()
    posted_by_role = UnicodeAttribute()
    landed_on = DateAttribute()
    allocation = AllocationAttribute(null=True)
    """Set only when the payment is reversed: what the reversal took off. A standing payment's
    allocation is derived from its loan's ledger, so it can never disagree with the schedule."""
    request_fingerprint = UnicodeAttribute(null=True)
    reversed_at = UnicodeAttribute(null=True)
    reversed_by_sub = UnicodeAttribute(null=True)
    reversed_by_role = UnicodeAttribute(null=True)
    reversal_reason = UnicodeAttribute(null=True)
    collector_id = UnicodeAttribute(null=True)
    branch = UnicodeAttribute(null=True)

    loan_index = LoanPaymentsIndex()


class UtrClaimModel(Model):
    """One row per UTR ever accepted, never deleted: the uniqueness claim a payment's transaction
    creates with ``attribute_not_exists``."""

    class Meta(_Meta):
        short_name = "utr-claims"

    utr = UnicodeAttribute(hash_key=True)
    payment_id = UnicodeAttribute()
    loan_id = UnicodeAttribute()
    claimed_at = UnicodeAttribute()


class RunStatusIndex(GlobalSecondaryIndex["DpdRunModel"]):
    class Meta:
        index_name = "status-index"
        projection = KeysOnlyProjection()

    status = UnicodeAttribute(hash_key=True)
    business_date = UnicodeAttribute(range_key=True)


class DpdRunModel(Model):
    """One record per business date with its latest outcome; ``segments`` maps a segment id to its
    checkpoint (JSON: cursor, done, counts), so a run can stop and be continued by another invocation."""

    class Meta(_Meta):
        short_name = "dpd-runs"

    business_date = UnicodeAttribute(hash_key=True)
    status = UnicodeAttribute()
    trigger = UnicodeAttribute()
    run_id = UnicodeAttribute()
    lease_until = IntegerAttribute()
    started_at = UnicodeAttribute()
    finished_at = UnicodeAttribute(null=True)
    mode = UnicodeAttribute(null=True)
    segments = MapAttribute[str, str](null=True)
    """Segment id -> JSON checkpoint. The run's counts are the sums over its segments, so a segment's
    cursor and its counts always move together in one conditional update."""
    errors = IntegerAttribute(default=0)
    last_error = UnicodeAttribute(null=True)
    continuations = IntegerAttribute(null=True)
    """Hand-overs to a continuation in the current attempt (``domain.runs.MAX_CONTINUATIONS``)."""
    claims = MapAttribute[str, Any](null=True)
    """Segment id -> ``{"owner": <worker id>, "until": <epoch seconds>}``: which worker of a fanned-out
    attempt holds each segment (docs/day-end.md, "Fan-out"). Emptied whenever an attempt takes the run."""

    status_index = RunStatusIndex()


class CaseStatusIndex(GlobalSecondaryIndex["LegalCaseModel"]):
    class Meta:
        index_name = "status-index"
        projection = AllProjection()

    status = UnicodeAttribute(hash_key=True)
    escalated_on = UnicodeAttribute(range_key=True)


class LegalCaseModel(Model):
    """One legal case per loan, ever: escalation is once and for good (docs/day-end.md)."""

    class Meta(_Meta):
        short_name = "legal-cases"

    loan_id = UnicodeAttribute(hash_key=True)
    case_id = UnicodeAttribute()
    status = UnicodeAttribute()
    escalated_on = UnicodeAttribute()
    dpd = IntegerAttribute()
    overdue_paise = IntegerAttribute()
    outstanding_principal_paise = IntegerAttribute()
    collector_id = UnicodeAttribute(null=True)
    branch = UnicodeAttribute(null=True)
    borrower_name = UnicodeAttribute()
    created_at = UnicodeAttribute()

    status_index = CaseStatusIndex()


class EntityIndex(GlobalSecondaryIndex["AuditModel"]):
    class Meta:
        index_name = "entity-index"
        projection = AllProjection()

    entity_id = UnicodeAttribute(hash_key=True)
    audit_id = UnicodeAttribute(range_key=True)


class ActorIndex(GlobalSecondaryIndex["AuditModel"]):
    class Meta:
        index_name = "actor-index"
        projection = AllProjection()

    actor_sub = UnicodeAttribute(hash_key=True)
    audit_id = UnicodeAttribute(range_key=True)


class ActionIndex(GlobalSecondaryIndex["AuditModel"]):
    class Meta:
        index_name = "action-index"
        projection = AllProjection()

    action = UnicodeAttribute(hash_key=True)
    audit_id = UnicodeAttribute(range_key=True)


class DayIndex(GlobalSecondaryIndex["AuditModel"]):
    class Meta:
        index_name = "day-index"
        projection = AllProjection()

    day = UnicodeAttribute(hash_key=True)
    audit_id = UnicodeAttribute(range_key=True)


class AuditModel(Model):
    class Meta(_Meta):
        short_name = "audit"

    audit_id = UnicodeAttribute(hash_key=True)
    at = UnicodeAttribute()
    day = UnicodeAttribute()
    actor_sub = UnicodeAttribute()
    actor_role = UnicodeAttribute()
    source_ip = UnicodeAttribute(null=True)
    request_id = UnicodeAttribute(null=True)
    action = UnicodeAttribute()
    entity_type = UnicodeAttribute()
    entity_id = UnicodeAttribute()
    before = JsonAttribute(null=True)
    after = JsonAttribute(null=True)
    outcome = UnicodeAttribute()
    reason = UnicodeAttribute(null=True)

    entity_index = EntityIndex()
    actor_index = ActorIndex()
    action_index = ActionIndex()
    day_index = DayIndex()


class UserModel(Model):
    """One user. Attributes added after the first release are optional, so items stored before them
    read with their defaults (no display name, no token cut-off, version 0).

    ``version`` is a plain number with explicit conditions (``adapters.dynamodb.users``), not a
    VersionAttribute: the unaudited ``put`` of the ops CLI and the demo seed replaces a user whatever
    its version, which a VersionAttribute would refuse."""

    class Meta(_Meta):
        short_name = "users"

    username = UnicodeAttribute(hash_key=True)
    role = UnicodeAttribute()
    password_hash = UnicodeAttribute()
    active = BooleanAttribute(default=True)
    display_name = UnicodeAttribute(null=True)
    branch = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute(null=True)
    updated_at = UnicodeAttribute(null=True)
    tokens_valid_after = IntegerAttribute(null=True)
    version = IntegerAttribute(null=True)


class LoginAttemptModel(Model):
    """Login attempts of one (username, source) in the window opened by the first of them.

    The key is ``<username>#<source>``. Its stored attribute keeps the table's original name
    ``username``: a new key attribute would mean replacing the table, which CloudFormation refuses for
    a table with a fixed name. The row expires by TTL once its window is over."""

    class Meta(_Meta):
        short_name = "login-attempts"

    throttle_key = UnicodeAttribute(hash_key=True, attr_name="username")
    attempts = IntegerAttribute()
    window_started_at = IntegerAttribute()
    expires_at = IntegerAttribute()


WRITES = "writes"


def _aggregate_model() -> type[Model]:
    """The portfolio counter items (``adapters.dynamodb.aggregates``): a key, what the item counts for,
    and a number attribute per counter. Built from the counter names so that a counter added to
    ``domain.portfolio`` is stored without a second list to keep in step; a counter a write never
    moved is simply absent and reads as 0."""

    class Meta(_Meta):
        short_name = "aggregates"

    attributes: dict[str, Any] = {
        "Meta": Meta,
        "__doc__": _aggregate_model.__doc__,
        "pk": UnicodeAttribute(hash_key=True),
        "kind": UnicodeAttribute(null=True),
        "scope": UnicodeAttribute(null=True),
        "month": UnicodeAttribute(null=True),
        "shard": IntegerAttribute(null=True),
    }
    for name in (*LOAN_COUNTERS, *COLLECTION_COUNTERS, WRITES):
        attributes[name] = IntegerAttribute(null=True)
    return type("AggregateModel", (Model,), attributes)


AggregateModel: Any = _aggregate_model()


class ReconciliationModel(Model):
    """A reconciliation run (``part`` = ``run``) and its segments' checkpoints (``part`` = the segment's
    name), plus one pointer item (``run_id`` = ``LATEST``) naming the latest finished run. ``body`` is
    the record as compressed JSON: a segment's share of the recount can hold many scopes."""

    class Meta(_Meta):
        short_name = "reconciliations"

    run_id = UnicodeAttribute(hash_key=True)
    part = UnicodeAttribute(range_key=True)
    status = UnicodeAttribute(null=True)
    pages = IntegerAttribute(null=True)
    continuations = IntegerAttribute(null=True)
    latest = UnicodeAttribute(null=True)
    """On the pointer item only: the run id of the latest finished run."""
    body = BinaryAttribute(null=True, legacy_encoding=False)


class ScoreModel(Model):
    """Collector scores (``adapters.dynamodb.scores``, docs/scoring.md): one row per month and collector,
    plus one row per month (``collector_id`` = ``#month``, never a username) saying which pass wrote
    the month and whether it is frozen."""

    class Meta(_Meta):
        short_name = "scores"

    month = UnicodeAttribute(hash_key=True)
    collector_id = UnicodeAttribute(range_key=True)
    as_of = UnicodeAttribute(null=True)
    frozen = BooleanAttribute(null=True)
    loans = IntegerAttribute(null=True)
    amount_due_paise = IntegerAttribute(null=True)
    collected_paise = IntegerAttribute(null=True)
    cured = IntegerAttribute(null=True)
    rolled_forward = IntegerAttribute(null=True)
    run_id = UnicodeAttribute(null=True)


class ReminderOutboxIndex(GlobalSecondaryIndex["ReminderModel"]):
    """Sparse: only reminders still waiting to go out have ``outbox`` (``OUTBOX#NN``, a shard), sorted by
    when the sender may next try them; a sent, failed or cancelled reminder leaves the index."""

    class Meta:
        index_name = "outbox-index"
        projection = AllProjection()

    outbox = UnicodeAttribute(hash_key=True)
    next_attempt_at = UnicodeAttribute(range_key=True)


class ReminderDayIndex(GlobalSecondaryIndex["ReminderModel"]):
    """Reminders by the IST day of their ``send_after``: ops' list of a day's reminders."""

    class Meta:
        index_name = "day-index"
        projection = AllProjection()

    send_day = UnicodeAttribute(hash_key=True)
    reminder_id = UnicodeAttribute(range_key=True)


class ReminderModel(Model):
    """One reminder per loan, kind and instalment, ever (``reminder_key`` = ``<KIND>#<seq>``): queueing is
    a put on condition that it does not exist, so re-runs add nothing (docs/reminders.md)."""

    class Meta(_Meta):
        short_name = "reminders"

    loan_id = UnicodeAttribute(hash_key=True)
    reminder_key = UnicodeAttribute(range_key=True)
    reminder_id = UnicodeAttribute()
    kind = UnicodeAttribute()
    seq = IntegerAttribute()
    due_date = UnicodeAttribute()
    business_date = UnicodeAttribute()
    send_after = UnicodeAttribute()
    send_day = UnicodeAttribute()
    status = UnicodeAttribute()
    reason = UnicodeAttribute(null=True)
    attempts = IntegerAttribute(default=0)
    outbox = UnicodeAttribute(null=True)
    next_attempt_at = UnicodeAttribute(null=True)
    attempt_started_at = UnicodeAttribute(null=True)
    queued_at = UnicodeAttribute()
    sent_at = UnicodeAttribute(null=True)
    message_id = UnicodeAttribute(null=True)
    collector_id = UnicodeAttribute(null=True)

    outbox_index = ReminderOutboxIndex()
    day_index = ReminderDayIndex()


class IdempotencyRecordModel(Model):
    """A COMPLETED Idempotency-Key record, as a payment's transaction writes it. The table and its
    layout belong to ``chalicelib.adapters.dynamodb.idempotency`` (which reads and claims records with boto3);
    the model exists for PynamoDB's transactions only, so it is not in :data:`ALL_MODELS`."""

    class Meta(_Meta):
        short_name = "idempotency"

    id = UnicodeAttribute(hash_key=True)
    validation = UnicodeAttribute()
    status = UnicodeAttribute()
    expiration = IntegerAttribute()
    in_progress_expiration = IntegerAttribute(null=True)
    data = UnicodeAttribute(null=True)


ALL_MODELS: tuple[type[Model], ...] = (
    LoanModel,
    PaymentModel,
    UtrClaimModel,
    DpdRunModel,
    LegalCaseModel,
    AuditModel,
    UserModel,
    LoginAttemptModel,
    AggregateModel,
    ReconciliationModel,
    ScoreModel,
    ReminderModel,
)


def bind(settings: Settings, host: str | None = None) -> None:
    """Point every model at this stage's tables and endpoint, dropping cached connections and clients.

    ``host`` defaults to ``AWS_ENDPOINT_URL_DYNAMODB`` (DynamoDB Local); None means real AWS.
    """
    endpoint = host if host is not None else os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or None
    _drop_clients()  # a rebinding starts from fresh clients, as it starts from fresh connections
    bound: tuple[type[Model], ...] = (*ALL_MODELS, IdempotencyRecordModel)
    for model in bound:
        meta: Any = model.Meta
        meta.table_name = settings.table_name(meta.short_name)
        meta.region = settings.region
        meta.host = endpoint
        model._connection = None
