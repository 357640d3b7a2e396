"""Stored users and the login-attempt counter."""

from __future__ import annotations

import dataclasses

from pynamodb.exceptions import DoesNotExist, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from chalicelib.adapters.dynamodb import paging
from chalicelib.adapters.dynamodb.errors import conditional_check_failed, storage_call
from chalicelib.adapters.dynamodb.mapping import audit_to_item, item_to_user, user_to_item
from chalicelib.adapters.dynamodb.models import LoginAttemptModel, UserModel
from chalicelib.adapters.dynamodb.transact import Entry, TransactionRefused, audit_entries, create_all, save_all
from chalicelib.domain.audit import AuditEntry
from chalicelib.domain.errors import Conflict, Unavailable
from chalicelib.retry import OPTIMISTIC_WRITE, retry
from chalicelib.services.ports import LoginWindow, Page, ThrottleKey, User, UserFilter

_USER_KEY = frozenset({"username"})


class DynamoUserStore:
    @storage_call
    def get(self, username: str) -> User | None:
        try:
            item = UserModel.get(username, consistent_read=True)
        except DoesNotExist:
            return None
        return item_to_user(item)

    @storage_call
    def put(self, user: User) -> None:
        """Create or replace, unconditionally and unaudited (ops CLI, demo seed)."""
        user_to_item(user).save()

    @storage_call
    def create(self, user: User, audit: AuditEntry) -> User:
        stored = dataclasses.replace(user, version=1)
        entries = [
            Entry("user", user_to_item(stored), UserModel.username.does_not_exist()),
            *audit_entries([audit_to_item(audit)]),
        ]

        create_all(
            lambda: entries,
            new="user",
            taken=lambda: Conflict(f"user {user.username} already exists", {"username": user.username}),
            busy=lambda: Conflict(f"user {user.username} is being created by someone else; try again"),
        )
        return stored

    @storage_call
    def update(self, user: User, audit: AuditEntry) -> User:
        stored = dataclasses.replace(user, version=user.version + 1)
        # Version 0 is a user stored before users had versions: it must still have none.
        unchanged = (
            UserModel.version == user.version
            if user.version
            else UserModel.username.exists() & UserModel.version.does_not_exist()
        )
        try:
            save_all([Entry("user", user_to_item(stored), unchanged), *audit_entries([audit_to_item(audit)])])
        except TransactionRefused:
            raise Conflict(
                f"user {user.username} was changed by someone else; read it again and retry",
                {"username": user.username},
            ) from None
        return stored

    @storage_call
    def list(self, filters: UserFilter, limit: int, cursor: str | None) -> Page[User]:
        # A Scan with a filter: the users table has only its username key, and a lender has a few
        # hundred users, so reading them all is cheaper than keeping an index for this admin screen.
        conditions: list[Condition] = []
        if filters.role is not None:
            conditions.append(UserModel.role == filters.role)
        if filters.active is True:
            # Items stored before ``active`` was always written count as active (the model's default).
            conditions.append(UserModel.active.does_not_exist() | (UserModel.active == True))  # noqa: E712
        elif filters.active is False:
            conditions.append(UserModel.active == False)  # noqa: E712
        results = UserModel.scan(
            filter_condition=paging.all_of(conditions),
            last_evaluated_key=paging.decode(cursor, _USER_KEY),
            consistent_read=True,
            page_size=500 if conditions else min(1000, limit + 1),
        )
        items, next_cursor = paging.collect_page(results, limit, _USER_KEY)
        return Page([item_to_user(i) for i in items], next_cursor)


class DynamoLoginThrottle:
    """Attempts per (username, source) in a fixed window opened by the first attempt; the row expires
    by TTL after its window.

    Every write is conditional on the state it expects: an ADD into a window that is still current, or
    a SET opening a new window where there is none or it has passed. Losing a race only means trying
    the other write, so concurrent attempts never lose a count and never reset a window another one
    has just opened."""

    @storage_call
    def count_attempt(self, key: ThrottleKey, now: int, window_seconds: int) -> LoginWindow:
        item = LoginAttemptModel(_storage_key(key))
        window_start = now - window_seconds

        def attempt() -> LoginWindow:
            counted = _update_if(
                item,
                [LoginAttemptModel.attempts.add(1)],
                LoginAttemptModel.window_started_at >= window_start,
            )
            if counted:
                return LoginWindow(attempts=int(item.attempts), started_at=int(item.window_started_at))
            opened = _update_if(
                item,
                [
                    LoginAttemptModel.attempts.set(1),
                    LoginAttemptModel.window_started_at.set(now),
                    LoginAttemptModel.expires_at.set(now + window_seconds + 1),
                ],
                LoginAttemptModel.window_started_at.does_not_exist()
                | (LoginAttemptModel.window_started_at < window_start),
            )
            if opened:
                return LoginWindow(attempts=1, started_at=now)
            raise _LostRound  # another attempt opened a new window between our two writes: count into it

        return retry(
            OPTIMISTIC_WRITE,
            attempt,
            retry_on=_LostRound,
            exhausted=lambda: Unavailable("login attempts could not be counted; try again"),
        )

    @storage_call
    def clear(self, key: ThrottleKey) -> None:
        LoginAttemptModel(_storage_key(key)).delete()


class _LostRound(Exception):
    """Both conditional writes lost to other writers of the same row: decide again on a fresh try.
    More than a few in a row does not happen short of a storm of logins for the same key; the rounds
    run under ``OPTIMISTIC_WRITE`` (``chalicelib.retry``), the policy of every read-decide-write race."""


def _storage_key(key: ThrottleKey) -> str:
    # A source never contains "#", so the last "#" always separates the two, whatever the username.
    return f"{key.username}#{key.source}"


def _update_if(item: LoginAttemptModel, actions: list[Action], condition: Condition) -> bool:
    """Apply ``actions`` if ``condition`` holds; False if it did not (the item is then unchanged)."""
    try:
        item.update(actions=actions, condition=condition)
    except UpdateError as exc:
        if conditional_check_failed(exc):
            return False
        raise
    return True
