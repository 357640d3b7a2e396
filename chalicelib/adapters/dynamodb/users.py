"""Stored users and the login-attempt counter."""

from __future__ import annotations

from pynamodb.exceptions import DoesNotExist, UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from chalicelib.adapters.dynamodb.errors import storage_call
from chalicelib.adapters.dynamodb.models import LoginAttemptModel, UserModel
from chalicelib.domain.errors import Unavailable
from chalicelib.retry import OPTIMISTIC_WRITE, retry
from chalicelib.services.ports import LoginWindow, ThrottleKey, User


class DynamoUserStore:
    @storage_call
    def get(self, username: str) -> User | None:
        try:
            item = UserModel.get(username, consistent_read=True)
        except DoesNotExist:
            return None
        return User(username=item.username, role=item.role, password_hash=item.password_hash, active=bool(item.active))

    @storage_call
    def put(self, user: User) -> None:
        UserModel(user.username, role=user.role, password_hash=user.password_hash, active=user.active).save()


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
        if exc.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True
