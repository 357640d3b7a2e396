"""Bulk reassignment of loans between collectors (docs/rules.md, "Bulk reassignment"; docs/api.md,
"Bulk reassignment").

``POST /api/v1/reassignments`` moves every ACTIVE loan of one collector, or a list of loans, to another
collector. A call works for a bounded time: 200 when everything is moved, 202 when it stopped for time
with loans left, and the client sends the same request again until it gets 200.
"""

from __future__ import annotations

from typing import Annotated

from chalice.app import Blueprint, Response
from pydantic import Field

from chalicelib.api.errors import json_response
from chalicelib.api.http import Call, endpoint, time_left_ms
from chalicelib.api.schemas import Identifier, LoanId, StrictModel
from chalicelib.domain.errors import NotFound, ValidationFailed
from chalicelib.domain.roles import MANAGE_LOANS
from chalicelib.services.reassignment import ReassignmentProgress
from chalicelib.wiring import services

bp = Blueprint(__name__)

MAX_LOAN_IDS = 1000


class ReassignIn(StrictModel):
    to_collector_id: Identifier
    from_collector_id: Identifier | None = None
    loan_ids: Annotated[list[LoanId], Field(min_length=1, max_length=MAX_LOAN_IDS)] | None = None

    def require_one_source(self) -> None:
        """Exactly one of ``from_collector_id`` and ``loan_ids`` says which loans move (400 otherwise)."""
        given = (self.from_collector_id is not None) + (self.loan_ids is not None)
        if given != 1:
            message = "give exactly one of from_collector_id and loan_ids"
            raise ValidationFailed(
                message,
                [{"field": "from_collector_id", "message": message}, {"field": "loan_ids", "message": message}],
            )


def _answer(progress: ReassignmentProgress) -> Response:
    body = {
        "moved": progress.moved,
        "already": progress.already,
        "remaining": progress.remaining,
        "done": progress.done,
    }
    return json_response(200 if progress.done else 202, body)


@endpoint(
    bp,
    "/api/v1/reassignments",
    methods=("POST",),
    roles=MANAGE_LOANS,
    summary="Move a collector's active loans, or listed loans, to another collector",
    body=ReassignIn,
    answers={200: "ReassignmentOut", 202: "ReassignmentOut"},
    errors=(NotFound,),
    tag="loans",
)
def reassign_loans(call: Call) -> Response:
    """Give exactly one of `from_collector_id` and `loan_ids`. A call works for a bounded time: 200
    when everything has moved, 202 when loans remain; send the same request again until 200."""
    body = call.parse(ReassignIn)
    body.require_one_source()
    # At most 25 s (API Gateway gives up after 29 s), less when the Lambda has less left; the service
    # keeps 5 s of it to count what remains and answer.
    time_left = time_left_ms(bp.lambda_context)
    reassignment = services().reassignment
    if body.from_collector_id is not None:
        progress = reassignment.move_collector_loans(call.ctx, body.from_collector_id, body.to_collector_id, time_left)
    else:  # require_one_source: the list is given
        progress = reassignment.move_loans(call.ctx, body.loan_ids or [], body.to_collector_id, time_left)
    return _answer(progress)
