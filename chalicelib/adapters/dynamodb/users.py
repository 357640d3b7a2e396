"""Stored users and the failed-login counter."""

from __future__ import annotations

from pynamodb.exceptions import DoesNotExist, UpdateError

from chalicelib.adapters.dynamodb.errors import storage_call
from chalicelib.adapters.dynamodb.models import LoginAttemptModel, UserModel
from chalicelib.services.ports import User


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
    """Failures per username in a fixed window. Counting is an atomic ADD; starting a new window is a
    conditional SET, so concurrent failures cannot reset each other's count. The row expires by TTL."""

    @storage_call
    def failures(self, username: str, window_start: int) -> int:
        try:
            item = LoginAttemptModel.get(username, consistent_read=True)
        except DoesNotExist:
            return 0
        return item.failures if item.window_started_at >= window_start else 0

    @storage_call
    def record_failure(self, username: str, now: int, window_seconds: int) -> int:
        item = LoginAttemptModel(username)
        window_start = now - window_seconds
        try:
            item.update(
                actions=[LoginAttemptModel.failures.add(1)],
                condition=LoginAttemptModel.window_started_at >= window_start,
            )
        except UpdateError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise
            try:
                item.update(
                    actions=[
                        LoginAttemptModel.failures.set(1),
                        LoginAttemptModel.window_started_at.set(now),
                        LoginAttemptModel.expires_at.set(now + window_seconds),
                    ],
                    condition=LoginAttemptModel.window_started_at.does_not_exist()
                    | (LoginAttemptModel.window_started_at < window_start),
                )
            except UpdateError as again:
                if again.cause_response_code != "ConditionalCheckFailedException":
                    raise
                # Someone else opened the new window first; count into it.
                item.update(actions=[LoginAttemptModel.failures.add(1)])
        return int(item.failures)

    @storage_call
    def clear(self, username: str) -> None:
        LoginAttemptModel(username).delete()
