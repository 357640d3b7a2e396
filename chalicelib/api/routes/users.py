"""Users: onboarding, changes and offboarding (docs/auth.md, "Users").

Admins write; admins and managers read. No answer carries a password or its hash
(``services.views.user_dict``).
"""

from __future__ import annotations

from typing import Any

from chalice.app import Blueprint, Response

from chalicelib.api.errors import json_response
from chalicelib.api.http import Call, created, endpoint, time_left_ms
from chalicelib.api.operations import PAGING, enum_param
from chalicelib.api.paging import page_params
from chalicelib.api.schemas import CreateUserIn, PatchUserIn
from chalicelib.domain.errors import Conflict, ValidationFailed
from chalicelib.domain.roles import MANAGE_USERS, READ_USERS, Role
from chalicelib.services.ports import UserFilter
from chalicelib.services.reassignment import ReassignmentProgress
from chalicelib.services.views import user_dict
from chalicelib.wiring import services

bp = Blueprint(__name__)

_ROLES = frozenset(r.value for r in Role)
_ACTIVE = {"true": True, "false": False}
REPEAT_MESSAGE = "loans remain to move: send the same request again to continue"


@endpoint(
    bp,
    "/api/v1/users",
    methods=("POST",),
    roles=MANAGE_USERS,
    summary="Create a user",
    body=CreateUserIn,
    answers={201: "UserOut"},
    errors=(Conflict,),
    tag="users",
)
def create_user(call: Call) -> Response:
    """Username lower-case `[a-z0-9._-]{3,64}`; password at least 12 characters (400 lists every
    problem); an existing username is 409 CONFLICT. No answer carries a password or its hash."""
    cmd = call.parse(CreateUserIn).to_command()
    return created(user_dict(services().users.create(call.ctx, cmd)))


@endpoint(
    bp,
    "/api/v1/users",
    methods=("GET",),
    roles=READ_USERS,
    summary="List users",
    query=(
        enum_param("role", _ROLES, "Only users with this role."),
        enum_param("active", _ACTIVE, "Only active (`true`) or deactivated (`false`) users."),
        *PAGING,
    ),
    answers={200: "UserPage"},
    tag="users",
)
def list_users(call: Call) -> dict[str, Any]:
    params = call.query()
    problems = []
    role = params.get("role")
    if role is not None and role not in _ROLES:
        problems.append({"field": "role", "message": "one of " + ", ".join(sorted(_ROLES))})
    active = params.get("active")
    if active is not None and active not in _ACTIVE:
        problems.append({"field": "active", "message": "true or false"})
    if problems:
        raise ValidationFailed("invalid query parameters", problems)
    limit, cursor = page_params(params)
    filters = UserFilter(role=role, active=_ACTIVE[active] if active is not None else None)
    page = services().users.list(call.ctx, filters, limit, cursor)
    return {"items": [user_dict(user) for user in page.items], "next_cursor": page.next_cursor}


@endpoint(
    bp,
    "/api/v1/users/{username}",
    methods=("GET",),
    roles=READ_USERS,
    summary="Read a user",
    answers={200: "UserOut"},
    tag="users",
)
def get_user(call: Call, username: str) -> dict[str, Any]:
    return user_dict(services().users.get(call.ctx, username))


@endpoint(
    bp,
    "/api/v1/users/{username}",
    methods=("PATCH",),
    roles=MANAGE_USERS,
    summary="Change a user: name, branch, role, password, or deactivate (offboard)",
    body=PatchUserIn,
    answers={200: "UserOut | OffboardedUserOut", 202: "OffboardingPendingOut"},
    errors=(Conflict,),
    tag="users",
)
def patch_user(call: Call, username: str) -> Response | dict[str, Any]:
    """200 with the user (for an offboarding with ``reassign_to``, with its ``reassignment`` totals
    too), once every loan has moved and the user is inactive; 202 ``{"user", "reassignment",
    "message"}`` while loans remain (the user still active and unchanged): the client sends the same
    request again."""
    changes = call.parse(PatchUserIn).to_changes()
    outcome = services().users.update(call.ctx, username, changes, time_left_ms(bp.lambda_context))
    user = user_dict(outcome.user)
    if outcome.reassignment is None:
        return user
    progress = _progress(outcome.reassignment)
    if not outcome.complete:
        return json_response(202, {"user": user, "reassignment": progress, "message": REPEAT_MESSAGE})
    return {**user, "reassignment": progress}


def _progress(progress: ReassignmentProgress) -> dict[str, Any]:
    return {
        "moved": progress.moved,
        "already": progress.already,
        "remaining": progress.remaining,
        "done": progress.done,
    }
