"""Day-end run records in DynamoDB. Every transition is one conditional write, so two invocations
for the same date can never both believe they own the run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import Any

from pynamodb.exceptions import DoesNotExist, UpdateError

from chalicelib.adapters.dynamodb.errors import conditional_check_failed, storage_call
from chalicelib.adapters.dynamodb.models import DpdRunModel
from chalicelib.domain.runs import LostLease, RunOutcome, RunRecord, RunStatus, Segment, SegmentBusy, SegmentState

CHECKPOINT_BATCH = 50
"""Segments set by one update: each is a short path and a value of about 100 bytes, so 50 keep the
update expression and its values far below DynamoDB's limits."""


def _state_to_item(state: SegmentState) -> str:
    fields = dataclasses.asdict(state)
    if not fields["reminders"]:
        del fields["reminders"]  # a checkpoint without reminders reads and writes as before they existed
    return json.dumps(fields, separators=(",", ":"))


def _segments_to_item(segments: dict[Segment, SegmentState]) -> dict[str, str]:
    """Keyed by the segment's text form (``Segment.__str__``), as every record ever written is."""
    return {str(segment): _state_to_item(state) for segment, state in segments.items()}


def _item_to_record(item: DpdRunModel) -> RunRecord:
    raw: dict[str, Any] = item.segments.as_dict() if item.segments is not None else {}
    return RunRecord(
        business_date=dt.date.fromisoformat(item.business_date),
        status=RunStatus(item.status),
        trigger=item.trigger,
        run_id=item.run_id,
        lease_until=item.lease_until,
        started_at=item.started_at,
        finished_at=item.finished_at,
        mode=item.mode,
        segments={Segment.parse(k): SegmentState(**json.loads(v)) for k, v in raw.items()},
        errors=item.errors or 0,
        last_error=item.last_error,
        continuations=item.continuations or 0,
    )


def _running(run_id: str) -> Any:
    """The run is still the attempt ``run_id`` and still running."""
    return (DpdRunModel.run_id == run_id) & (DpdRunModel.status == RunStatus.RUNNING.value)


def _claim(segment: Segment) -> Any:
    claims: Any = DpdRunModel.claims
    return claims[str(segment)]


def _free(now: int) -> Any:
    """A date's run may be taken when it never ran, failed, was skipped, or its owner's lease ran out."""
    return (
        DpdRunModel.business_date.does_not_exist()
        | DpdRunModel.status.is_in(RunStatus.FAILED.value, RunStatus.SKIPPED.value)
        | ((DpdRunModel.status == RunStatus.RUNNING.value) & (DpdRunModel.lease_until < now))
    )


class DynamoRunStore:
    @storage_call
    def get(self, business_date: dt.date) -> RunRecord | None:
        try:
            return _item_to_record(DpdRunModel.get(business_date.isoformat(), consistent_read=True))
        except DoesNotExist:
            return None

    @storage_call
    def acquire(
        self,
        business_date: dt.date,
        run_id: str,
        trigger: str,
        now: int,
        lease_seconds: int,
        now_iso: str,
        continuation: bool = False,
    ) -> RunRecord | RunOutcome:
        """Take the date's run: free if it never ran, failed, was skipped, or its owner's lease ran out.
        Checkpoints of an earlier attempt are kept, so the new owner resumes rather than restarts; the
        count of continuations is kept only by a continuation (anything else starts a new attempt)."""
        item = DpdRunModel(business_date.isoformat())
        actions: list[Any] = [
            DpdRunModel.status.set(RunStatus.RUNNING.value),
            DpdRunModel.run_id.set(run_id),
            DpdRunModel.trigger.set(trigger),
            DpdRunModel.lease_until.set(now + lease_seconds),
            DpdRunModel.started_at.set(DpdRunModel.started_at | now_iso),
            DpdRunModel.finished_at.remove(),
            # Claims belong to one attempt's workers; a worker of an earlier attempt is refused by run_id.
            DpdRunModel.claims.set({}),
        ]
        if not continuation:
            actions.append(DpdRunModel.continuations.set(0))
        refused = self._take(item, now, actions)
        if refused is not None:
            return refused
        return _item_to_record(item)

    @storage_call
    def plan(self, business_date: dt.date, run_id: str, mode: str, segments: dict[Segment, SegmentState]) -> None:
        DpdRunModel(business_date.isoformat()).update(
            actions=[DpdRunModel.mode.set(mode), DpdRunModel.segments.set(_segments_to_item(segments))],
            condition=DpdRunModel.run_id == run_id,
        )

    @storage_call
    def checkpoint(
        self,
        business_date: dt.date,
        run_id: str,
        states: Mapping[Segment, SegmentState],
        lease_until: int,
        worker: str | None = None,
    ) -> None:
        """One conditional update per ``CHECKPOINT_BATCH`` segments: usually one segment, or the many of a
        phase that finished in one page (docs/day-end.md, "Checkpoints" in §4). A segment worker's update
        also holds only while it still holds each segment's claim, and renews it."""
        segments: Any = DpdRunModel.segments
        batch = list(states.items())
        for start in range(0, len(batch), CHECKPOINT_BATCH):
            chunk = batch[start : start + CHECKPOINT_BATCH]
            actions = [segments[str(segment)].set(_state_to_item(state)) for segment, state in chunk]
            condition = _running(run_id)
            if worker is not None:
                for segment, _state in chunk:
                    claim = _claim(segment)
                    condition &= claim["owner"] == worker
                    actions.append(claim["until"].set(lease_until))
            try:
                DpdRunModel(business_date.isoformat()).update(
                    actions=[*actions, DpdRunModel.lease_until.set(lease_until)], condition=condition
                )
            except UpdateError as exc:
                if conditional_check_failed(exc):
                    raise LostLease(business_date.isoformat()) from None
                raise

    @storage_call
    def claim(
        self,
        business_date: dt.date,
        run_id: str,
        segments: Sequence[Segment],
        worker: str,
        now: int,
        lease_seconds: int,
    ) -> RunRecord:
        """All the segments or none, in one conditional update that also renews the run's lease: a segment
        is free if it was never claimed in this attempt, its claim ran out, or ``worker`` holds it."""
        until = now + lease_seconds
        condition = _running(run_id)
        actions: list[Any] = [DpdRunModel.lease_until.set(until)]
        for segment in segments:
            claim = _claim(segment)
            condition &= claim.does_not_exist() | (claim["until"] < now) | (claim["owner"] == worker)
            actions.append(claim.set({"owner": worker, "until": until}))
        item = DpdRunModel(business_date.isoformat())
        try:
            item.update(actions=actions, condition=condition)
        except UpdateError as exc:
            if not conditional_check_failed(exc):
                raise
            current = self.get(business_date)
            if current is None or current.run_id != run_id or current.status is not RunStatus.RUNNING:
                raise LostLease(business_date.isoformat()) from None
            raise SegmentBusy(business_date.isoformat()) from None
        return _item_to_record(item)

    @storage_call
    def release_claims(self, business_date: dt.date, run_id: str, segments: Sequence[Segment], worker: str) -> None:
        """In one update, if ``worker`` still holds them all; otherwise nothing (a claim that ran out and was
        taken is the taker's, and the others run out by themselves: releasing only saves a retry's wait)."""
        condition = _running(run_id)
        for segment in segments:
            condition &= _claim(segment)["owner"] == worker
        try:
            DpdRunModel(business_date.isoformat()).update(
                actions=[_claim(segment)["until"].set(0) for segment in segments], condition=condition
            )
        except UpdateError as exc:
            if not conditional_check_failed(exc):
                raise

    @storage_call
    def finish(
        self, business_date: dt.date, run_id: str, status: RunStatus, now_iso: str, error: str | None = None
    ) -> RunRecord:
        item = DpdRunModel(business_date.isoformat())
        actions: list[Any] = [DpdRunModel.status.set(status.value), DpdRunModel.finished_at.set(now_iso)]
        if status is not RunStatus.COMPLETED:
            actions.append(DpdRunModel.lease_until.set(0))
        if error is not None:
            actions += [DpdRunModel.errors.add(1), DpdRunModel.last_error.set(error[:1000])]
        try:
            # Still running: a second settle step (Step Functions retrying one that is alive) or a late worker
            # must not finish a run twice, nor turn a completed run into a failed one.
            item.update(actions=actions, condition=_running(run_id))
        except UpdateError as exc:
            if conditional_check_failed(exc):
                raise LostLease(business_date.isoformat()) from None
            raise
        return _item_to_record(item)

    @storage_call
    def release(self, business_date: dt.date, run_id: str) -> None:
        """Hand the run over to a continuation, counted: the next invocation may take it at once instead
        of waiting out the lease."""
        DpdRunModel(business_date.isoformat()).update(
            actions=[DpdRunModel.lease_until.set(0), DpdRunModel.continuations.add(1)],
            condition=DpdRunModel.run_id == run_id,
        )

    @storage_call
    def skip(self, business_date: dt.date, trigger: str, run_id: str, now: int, now_iso: str) -> RunOutcome:
        """Record that the kill switch stopped this date; never over a completed or live run."""
        return (
            self._take(
                DpdRunModel(business_date.isoformat()),
                now,
                [
                    DpdRunModel.status.set(RunStatus.SKIPPED.value),
                    DpdRunModel.trigger.set(trigger),
                    DpdRunModel.run_id.set(run_id),
                    DpdRunModel.lease_until.set(0),
                    DpdRunModel.started_at.set(DpdRunModel.started_at | now_iso),
                    DpdRunModel.finished_at.set(now_iso),
                ],
            )
            or RunOutcome.SKIPPED
        )

    def _take(self, item: DpdRunModel, now: int, actions: list[Any]) -> RunOutcome | None:
        """Apply ``actions`` if the date's run is free (see ``_free``); otherwise say why not."""
        try:
            item.update(actions=actions, condition=_free(now))
        except UpdateError as exc:
            if not conditional_check_failed(exc):
                raise
            current = self.get(dt.date.fromisoformat(item.business_date))
            if current is not None and current.status is RunStatus.COMPLETED:
                return RunOutcome.ALREADY_COMPLETED
            return RunOutcome.IN_PROGRESS
        return None

    @storage_call
    def latest_completed(self, before: dt.date | None = None) -> dt.date | None:
        condition = DpdRunModel.business_date < before.isoformat() if before else None
        for item in DpdRunModel.status_index.query(
            RunStatus.COMPLETED.value, range_key_condition=condition, scan_index_forward=False, limit=1
        ):
            return dt.date.fromisoformat(item.business_date)
        return None

    @storage_call
    def history(self, limit: int, before: dt.date | None) -> list[RunRecord]:
        """Newest first. Run records are one a day (a few hundred a year), so a scan sorted here is
        cheaper than another index; ``before`` pages back through older dates."""
        condition = DpdRunModel.business_date < before.isoformat() if before else None
        records = [_item_to_record(i) for i in DpdRunModel.scan(filter_condition=condition)]
        records.sort(key=lambda r: r.business_date, reverse=True)
        return records[:limit]
