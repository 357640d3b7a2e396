"""User use cases: create, read, list, change, and a collector's offboarding (docs/auth.md, "Users").

Every change is stored with its audit entry in one transaction by the user store; neither the answer
nor the audit entry ever carries a password or its hash (``services.views.user_dict``).

Offboarding a collector moves their loans first and deactivates them after, so that however the
request is interrupted or repeated, no loan is ever left with an inactive collector:

1. move the loans to ``reassign_to`` (``ReassignmentService.move_collector_loans``);
2. if that stopped for time, answer with the progress and the user still active: the client repeats
   the same request, which continues where this one stopped;
3. when every loan has moved, deactivate the user (conditional on the version read, audited in the
   same transaction), then move once more, for a loan assigned between 1 and 3.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from chalicelib import clock
from chalicelib.domain.audit import Action
from chalicelib.domain.errors import Conflict, NotFound, ValidationFailed
from chalicelib.domain.loan import LoanStatus
from chalicelib.domain.roles import MANAGE_USERS, READ_USERS, Role
from chalicelib.domain.users import MAX_TEXT_CHARS, password_problems, username_problem
from chalicelib.retry import OPTIMISTIC_WRITE, retry
from chalicelib.services.auth import AuthService, hash_password
from chalicelib.services.context import RequestContext
from chalicelib.services.ports import LoanFilter, LoanRepository, Page, User, UserFilter, UserRepository
from chalicelib.services.reassignment import ReassignmentProgress
from chalicelib.services.views import user_dict

TimeLeft = Callable[[], int]
"""Milliseconds this invocation may still spend; None where there is no limit."""
ROLE_NAMES = frozenset(r.value for r in Role)


class CollectorLoans(Protocol):
    """What offboarding needs of ``services.reassignment.ReassignmentService``."""

    def has_active_loans(self, collector_id: str) -> bool: ...

    def move_collector_loans(
        self, ctx: RequestContext, from_collector: str, to_collector: str, time_left_ms: TimeLeft | None
    ) -> ReassignmentProgress: ...


@dataclass(frozen=True)
class NewUser:
    username: str
    password: str
    role: str
    display_name: str | None = None
    branch: str | None = None


@dataclass(frozen=True)
class UserChanges:
    """Only what the request named is changed; ``display_name``/``branch`` given as None clear them."""

    display_name: str | None = None
    display_name_given: bool = False
    branch: str | None = None
    branch_given: bool = False
    role: str | None = None
    active: bool | None = None
    password: str | None = None
    reassign_to: str | None = None


@dataclass(frozen=True)
class UserUpdate:
    """The user after a change, and for an offboarding the progress of moving their loans. When
    ``reassignment`` is not done, loans remain to move and the same request must be repeated."""

    user: User
    reassignment: ReassignmentProgress | None = None

    @property
    def complete(self) -> bool:
        return self.reassignment is None or self.reassignment.done


@dataclass
class UserService:
    users: UserRepository
    auth: AuthService
    reassignment: CollectorLoans
    loans: LoanRepository
    """Read only, to say how many active loans block an offboarding."""

    # --- reading ------------------------------------------------------------------------------------

    def get(self, ctx: RequestContext, username: str) -> User:
        ctx.require(READ_USERS)
        user = self.users.get(username)
        if user is None:
            raise NotFound(f"user {username} not found")
        return user

    def list(self, ctx: RequestContext, filters: UserFilter, limit: int, cursor: str | None) -> Page[User]:
        ctx.require(READ_USERS)
        return self.users.list(filters, limit, cursor)

    # --- creating -----------------------------------------------------------------------------------

    def create(self, ctx: RequestContext, cmd: NewUser) -> User:
        """A new user, audited (USER_CREATED). 400 for a bad username, role or password (every
        problem listed), 409 CONFLICT when the username is taken."""
        ctx.require(MANAGE_USERS)
        problems = []
        if (problem := username_problem(cmd.username)) is not None:
            problems.append({"field": "username", "message": problem})
        problems += _password_details(cmd.password, cmd.username)
        problems += _role_details(cmd.role)
        problems += _text_details(display_name=cmd.display_name, branch=cmd.branch)
        if problems:
            raise ValidationFailed("the user cannot be created as given", problems)
        # Checked before hashing (deliberately slow); the store's conditional write still decides a race.
        if self.users.get(cmd.username) is not None:
            raise _taken(cmd.username)
        now = clock.now_iso()
        user = User(
            username=cmd.username,
            role=cmd.role,
            password_hash=hash_password(cmd.password, self.auth.iterations),
            display_name=cmd.display_name,
            branch=cmd.branch,
            created_at=now,
            updated_at=now,
        )
        entry = ctx.audit_entry(Action.USER_CREATED, "user", user.username, None, user_dict(user))
        stored = self.users.create(user, entry)
        self.auth.forget(user.username)
        return stored

    # --- changing -----------------------------------------------------------------------------------

    def update(
        self, ctx: RequestContext, username: str, changes: UserChanges, time_left_ms: TimeLeft | None = None
    ) -> UserUpdate:
        """Apply ``changes``, audited (USER_UPDATED). Deactivating a collector who holds active loans
        needs ``reassign_to`` (else 409 CONFLICT) and moves the loans first (module docstring); the
        answer's ``reassignment`` says how far that got. A repeat of a finished request changes
        nothing more and writes no second audit entry."""
        ctx.require(MANAGE_USERS)
        problems = _role_details(changes.role) if changes.role is not None else []
        if changes.password is not None:
            problems += _password_details(changes.password, username)
        problems += _text_details(display_name=changes.display_name, branch=changes.branch)
        if problems:
            raise ValidationFailed("the user cannot be changed as given", problems)
        user = self.users.get(username)
        if user is None:
            raise NotFound(f"user {username} not found")
        offboarding = changes.active is False and user.role == Role.COLLECTOR.value
        if changes.reassign_to is not None and not offboarding:
            raise ValidationFailed(
                "reassign_to is only for deactivating a collector",
                [{"field": "reassign_to", "message": "give it with active: false, for a collector"}],
            )
        self._keep_an_admin(user, changes)
        if user.role == Role.COLLECTOR.value and changes.role not in (None, Role.COLLECTOR.value):
            # A loan must always sit with an active collector: move them before the role changes.
            self._refuse_if_holding_loans(username)
        first: ReassignmentProgress | None = None
        if offboarding and changes.reassign_to is None:
            self._refuse_if_holding_loans(username)
        elif offboarding and changes.reassign_to is not None:
            self._require_successor(username, changes.reassign_to)
            first = self.reassignment.move_collector_loans(ctx, username, changes.reassign_to, time_left_ms)
            if not first.done:
                return UserUpdate(user, first)  # still active: nothing else changes until every loan moved
        password_hash = hash_password(changes.password, self.auth.iterations) if changes.password else None
        stored = self._write(ctx, username, changes, password_hash)
        if first is None or changes.reassign_to is None:
            return UserUpdate(stored)
        # A loan assigned to the collector after the first move and before the deactivation landed.
        second = self.reassignment.move_collector_loans(ctx, username, changes.reassign_to, time_left_ms)
        total = ReassignmentProgress(
            moved=first.moved + second.moved, already=first.already + second.already, remaining=second.remaining
        )
        return UserUpdate(stored, total)

    def _write(self, ctx: RequestContext, username: str, changes: UserChanges, password_hash: str | None) -> User:
        """Store the changed user with its audit entry, conditional on the version read; a concurrent
        change makes it read again and re-apply (``OPTIMISTIC_WRITE``)."""

        def attempt() -> User:
            current = self.users.get(username)
            if current is None:
                raise NotFound(f"user {username} not found")
            changed = _changed(current, changes, password_hash)
            if changed == current:
                return current  # a repeat: nothing to write, nothing to audit
            before, after = user_dict(current), user_dict(changed)
            if password_hash is not None:
                after["password_changed"] = True
            entry = ctx.audit_entry(Action.USER_UPDATED, "user", username, before, after)
            stored = self.users.update(changed, entry)
            self.auth.forget(username)
            return stored

        return retry(
            OPTIMISTIC_WRITE,
            attempt,
            retry_on=Conflict,
            exhausted=lambda: Conflict(f"user {username} is being changed by others; try again"),
        )

    def _keep_an_admin(self, user: User, changes: UserChanges) -> None:
        """The stage must keep one active admin: without one nobody can onboard, offboard or repair
        users through the API, and the only way back would be the ops CLI with AWS credentials."""
        demoted = changes.role not in (None, Role.ADMIN.value) or changes.active is False
        if user.role != Role.ADMIN.value or not user.active or not demoted:
            return
        filters, cursor = UserFilter(role=Role.ADMIN.value, active=True), None
        while True:
            page = self.users.list(filters, 50, cursor)
            if any(admin.username != user.username for admin in page.items):
                return
            if (cursor := page.next_cursor) is None:
                raise Conflict(f"{user.username} is the last active admin: make another admin first")

    def _refuse_if_holding_loans(self, username: str) -> None:
        if not self.reassignment.has_active_loans(username):
            return
        raise Conflict(
            f"collector {username} still holds active loans: name an active collector in reassign_to",
            {"active_loans": self._count_active_loans(username), "reassign_to": "required"},
        )

    def _count_active_loans(self, username: str) -> int:
        """For the refusal's details only: a collector holds hundreds of loans, not millions."""
        filters = LoanFilter(collector_id=username, status=LoanStatus.ACTIVE.value)
        count, cursor = 0, None
        while True:
            page = self.loans.list(filters, 200, cursor)
            count += len(page.items)
            cursor = page.next_cursor
            if cursor is None:
                return count

    def _require_successor(self, username: str, successor: str) -> None:
        message = None
        if successor == username:
            message = "must be another collector"
        else:
            target = self.users.get(successor)
            if target is None or target.role != Role.COLLECTOR.value or not target.active:
                message = "not an active collector"
        if message is not None:
            raise ValidationFailed("reassign_to cannot take the loans", [{"field": "reassign_to", "message": message}])


def _changed(user: User, changes: UserChanges, password_hash: str | None) -> User:
    updates: dict[str, Any] = {}
    if changes.display_name_given:
        updates["display_name"] = changes.display_name
    if changes.branch_given:
        updates["branch"] = changes.branch
    if changes.role is not None:
        updates["role"] = changes.role
    if changes.active is not None:
        updates["active"] = changes.active
    if password_hash is not None:
        updates["password_hash"] = password_hash
    if all(getattr(user, name) == value for name, value in updates.items()):
        return user
    now = clock.now_epoch()
    # A password change or a deactivation ends every token issued before it (docs/auth.md); a
    # reactivation does not bring those back.
    ends_tokens = password_hash is not None or (user.active and changes.active is False)
    if ends_tokens:
        updates["tokens_valid_after"] = max(user.tokens_valid_after, now)
    return dataclasses.replace(user, **updates, updated_at=clock.now_iso())


def _taken(username: str) -> Conflict:
    return Conflict(f"user {username} already exists", {"username": username})


def _password_details(password: str, username: str) -> builtins.list[dict[str, str]]:
    return [{"field": "password", "message": problem} for problem in password_problems(password, username)]


def _role_details(role: str) -> builtins.list[dict[str, str]]:
    if role in ROLE_NAMES:
        return []
    return [{"field": "role", "message": "one of " + ", ".join(sorted(ROLE_NAMES))}]


def _text_details(**values: str | None) -> builtins.list[dict[str, str]]:
    return [
        {"field": name, "message": f"1 to {MAX_TEXT_CHARS} characters"}
        for name, value in values.items()
        if value is not None and not 0 < len(value) <= MAX_TEXT_CHARS
    ]
