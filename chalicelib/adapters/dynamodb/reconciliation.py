"""What the reconciliation reads (the ledger's tables, consistently) and where it keeps its runs
(docs/reconciliation.md). It never writes a loan, a payment or a claim."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from pynamodb.exceptions import DoesNotExist, PutError

from chalicelib.adapters.dynamodb import paging
from chalicelib.adapters.dynamodb.batch import batch_get, batch_put
from chalicelib.adapters.dynamodb.errors import conditional_check_failed, storage_call
from chalicelib.adapters.dynamodb.mapping import item_to_loan, item_to_payment
from chalicelib.adapters.dynamodb.models import LoanModel, PaymentModel, ReconciliationModel, UtrClaimModel
from chalicelib.domain.payment import Payment
from chalicelib.domain.reconciliation import (
    Mismatch,
    ReconciliationRun,
    ReconciliationStatus,
    SegmentProgress,
    SourceKind,
)
from chalicelib.services.ports import StoredLoan

PAGE_SIZE = 100
RUN_PART = "run"
LATEST = "LATEST"


class DynamoLedgerReader:
    @storage_call
    def loans_segment(
        self, segment: int, total: int, cursor: dict[str, Any] | None
    ) -> tuple[list[StoredLoan], dict[str, Any] | None]:
        results = paging.segment_page(LoanModel, segment, total, cursor, PAGE_SIZE)
        loans = [StoredLoan(item_to_loan(i), i.outstanding_principal_paise) for i in results]
        return loans, results.last_evaluated_key

    @storage_call
    def payments_segment(
        self, segment: int, total: int, cursor: dict[str, Any] | None
    ) -> tuple[list[Payment], dict[str, Any] | None]:
        results = paging.segment_page(PaymentModel, segment, total, cursor, PAGE_SIZE)
        return [item_to_payment(i) for i in results], results.last_evaluated_key

    @storage_call
    def claims_segment(
        self, segment: int, total: int, cursor: dict[str, Any] | None
    ) -> tuple[list[tuple[str, str]], dict[str, Any] | None]:
        results = paging.segment_page(UtrClaimModel, segment, total, cursor, PAGE_SIZE)
        return [(i.utr, i.payment_id) for i in results], results.last_evaluated_key

    @storage_call
    def loans(self, ids: Iterable[str]) -> dict[str, StoredLoan]:
        return {
            i.loan_id: StoredLoan(item_to_loan(i), i.outstanding_principal_paise)
            for i in batch_get(LoanModel, sorted(set(ids)), consistent_read=True)
        }

    @storage_call
    def payments(self, ids: Iterable[str]) -> dict[str, Payment]:
        return {
            i.payment_id: item_to_payment(i) for i in batch_get(PaymentModel, sorted(set(ids)), consistent_read=True)
        }

    @storage_call
    def claims(self, utrs: Iterable[str]) -> dict[str, str]:
        return {i.utr: i.payment_id for i in batch_get(UtrClaimModel, sorted(set(utrs)), consistent_read=True)}


# --- runs -----------------------------------------------------------------------------------------------


def _pack(value: Any) -> bytes:
    return zlib.compress(json.dumps(value, separators=(",", ":"), sort_keys=True, default=str).encode())


def _unpack(blob: bytes | None) -> Any:
    return json.loads(zlib.decompress(blob)) if blob else {}


def _run_body(run: ReconciliationRun) -> dict[str, Any]:
    body = dataclasses.asdict(run)
    body["as_of"] = run.as_of.isoformat()
    body["status"] = run.status.value
    body["mismatches"] = [m.as_dict() for m in run.mismatches] if run.mismatches is not None else None
    return body


def _run_from(item: Any) -> ReconciliationRun:
    body = _unpack(item.body)
    body["as_of"] = dt.date.fromisoformat(body["as_of"])
    body["status"] = ReconciliationStatus(body["status"])
    body["months"] = tuple(body.get("months") or ())
    body["score_months"] = tuple(body.get("score_months") or ())
    if body.get("mismatches") is not None:
        body["mismatches"] = [Mismatch.from_dict(m) for m in body["mismatches"]]
    body["continuations"] = int(item.continuations or 0)
    return ReconciliationRun(**body)


def _segment_from(item: Any) -> SegmentProgress:
    body = _unpack(item.body)
    body["source"] = SourceKind(body["source"])
    return SegmentProgress(**body)


class DynamoReconciliationRuns:
    @storage_call
    def create(self, run: ReconciliationRun, segments: Sequence[SegmentProgress]) -> None:
        batch_put(
            [
                ReconciliationModel(run.run_id, segment.name, pages=0, body=_pack(dataclasses.asdict(segment)))
                for segment in segments
            ]
        )
        item = ReconciliationModel(
            run.run_id, RUN_PART, status=run.status.value, continuations=0, body=_pack(_run_body(run))
        )
        item.save(condition=ReconciliationModel.run_id.does_not_exist())

    @storage_call
    def get(self, run_id: str) -> ReconciliationRun | None:
        try:
            return _run_from(ReconciliationModel.get(run_id, RUN_PART, consistent_read=True))
        except DoesNotExist:
            return None

    @storage_call
    def latest(self) -> ReconciliationRun | None:
        try:
            pointer = ReconciliationModel.get(LATEST, RUN_PART, consistent_read=True)
        except DoesNotExist:
            return None
        return self.get(pointer.latest) if pointer.latest else None

    @storage_call
    def segments(self, run_id: str) -> list[SegmentProgress]:
        items = ReconciliationModel.query(run_id, consistent_read=True)
        return [_segment_from(i) for i in items if i.part != RUN_PART]

    @storage_call
    def checkpoint(self, run_id: str, segment: SegmentProgress) -> bool:
        """Store the segment's progress unless a checkpoint at least as far along is stored already
        (another invocation of the same run is ahead): False then, and this one should stop."""
        item = ReconciliationModel(run_id, segment.name, pages=segment.pages, body=_pack(dataclasses.asdict(segment)))
        try:
            item.save(condition=ReconciliationModel.pages < segment.pages)
        except PutError as exc:
            if conditional_check_failed(exc):
                return False
            raise
        return True

    @storage_call
    def hand_over(self, run_id: str) -> int:
        """Count one hand-over to a continuation; the count after it."""
        item = ReconciliationModel(run_id, RUN_PART)
        item.update(actions=[ReconciliationModel.continuations.add(1)], condition=ReconciliationModel.run_id.exists())
        return int(item.continuations or 0)

    @storage_call
    def finish(self, run: ReconciliationRun) -> bool:
        """Record the run's outcome once (False: another invocation finished it first), and point
        ``latest`` at it unless a later run has finished already."""
        item = ReconciliationModel(
            run.run_id, RUN_PART, status=run.status.value, continuations=run.continuations, body=_pack(_run_body(run))
        )
        try:
            item.save(condition=ReconciliationModel.status == ReconciliationStatus.RUNNING.value)
        except PutError as exc:
            if conditional_check_failed(exc):
                return False
            raise
        pointer = ReconciliationModel(LATEST, RUN_PART, latest=run.run_id)
        try:
            pointer.save(
                condition=ReconciliationModel.latest.does_not_exist() | (ReconciliationModel.latest < run.run_id)
            )
        except PutError as exc:
            if not conditional_check_failed(exc):
                raise
        return True
