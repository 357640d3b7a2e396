"""Users: the username and password rules, UserService with in-memory fakes (create, list, change,
offboarding with a fake reassignment), and the revocation check of AuthService with its cache."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chalicelib.clock import IST, FixedClock, use_clock
from chalicelib.domain.audit import Action, Actor
from chalicelib.domain.errors import Conflict, Forbidden, NotFound, Unauthenticated, Unavailable, ValidationFailed
from chalicelib.domain.loan import Borrower, Loan, LoanStatus, initial_delinquency
from chalicelib.domain.schedule import import_schedule
from chalicelib.domain.users import (
    COMMON_PASSWORDS,
    MIN_PASSWORD_CHARS,
    PUBLIC_FIELDS,
    USERNAME_PATTERN,
    password_problems,
    username_problem,
)
from chalicelib.services.auth import AuthService, decode_verified, hash_password, issue_token, verify_password
from chalicelib.services.context import RequestContext
from chalicelib.services.ports import AuditFilter, User, UserFilter
from chalicelib.services.reassignment import ReassignmentProgress
from chalicelib.services.users import NewUser, UserChanges, UserService
from chalicelib.services.views import user_dict
from tests.fakes import (
    ADMIN,
    AUDITOR,
    COLLECTOR,
    MANAGER,
    InMemoryAuditLog,
    InMemoryLoanRepository,
    InMemoryLoginThrottle,
    InMemoryUserStore,
    RecordingMetrics,
)

SECRET = "unit-test-secret-0123456789-abcdefghijklmnopqrstuvwxyz-0123456789-abcdef"
ITERATIONS = 1_000
NOW = dt.datetime(2025, 3, 10, 10, 0, tzinfo=IST)
GOOD_PASSWORD = "plum-river-ladder-42"
OLD_PASSWORD = "old-plum-password-1"


# --- the rules -------------------------------------------------------------------------------------


@given(st.from_regex(r"[a-z0-9._-]{3,64}", fullmatch=True))
def test_every_name_of_the_pattern_is_a_username(name: str) -> None:
    assert username_problem(name) is None


@given(st.text(max_size=80))
def test_a_username_is_exactly_the_pattern(name: str) -> None:
    expected = 3 <= len(name) <= 64 and all(c in "abcdefghijklmnopqrstuvwxyz0123456789._-" for c in name)
    assert (username_problem(name) is None) == expected
    assert bool(USERNAME_PATTERN.fullmatch(name)) == expected


@pytest.mark.parametrize("name", ["Ravi", "ab", "a" * 65, "ravi kumar", "ravi@x", "ravi\n", "रवि", ""])
def test_names_that_are_not_usernames(name: str) -> None:
    assert username_problem(name) is not None


def test_password_rules() -> None:
    assert password_problems(GOOD_PASSWORD, "ravi") == []
    assert password_problems("x" * (MIN_PASSWORD_CHARS - 1), "ravi") == [f"at least {MIN_PASSWORD_CHARS} characters"]
    assert password_problems("my-name-is-RAVI-ok", "ravi") == ["must not contain the username"]
    assert password_problems("PASSWORD1234", "ravi") == [
        "too common: it is on the list of passwords attackers try first"
    ]
    assert len(password_problems("ravi", "ravi")) == 2
    assert password_problems("x" * 1025, "ravi") == ["at most 1024 characters"]


def test_the_common_list_is_lower_case_and_long_enough_to_matter() -> None:
    assert len(COMMON_PASSWORDS) >= 50
    assert all(p == p.casefold() for p in COMMON_PASSWORDS)


# --- the service ------------------------------------------------------------------------------------


class FakeReassignment:
    """Loans held per collector; moves at most ``per_call`` loans per call (None: all), like a call
    that stops for time."""

    def __init__(self) -> None:
        self.held: dict[str, int] = {}
        self.per_call: int | None = None
        self.calls: list[tuple[str, str, bool]] = []
        self.on_move: Callable[[], None] | None = None

    def has_active_loans(self, collector_id: str) -> bool:
        return self.held.get(collector_id, 0) > 0

    def move_collector_loans(
        self, ctx: RequestContext, from_collector: str, to_collector: str, time_left_ms: Callable[[], int] | None
    ) -> ReassignmentProgress:
        self.calls.append((from_collector, to_collector, time_left_ms is not None))
        if self.on_move is not None:
            self.on_move()
        have = self.held.get(from_collector, 0)
        moving = have if self.per_call is None else min(have, self.per_call)
        self.held[from_collector] = have - moving
        self.held[to_collector] = self.held.get(to_collector, 0) + moving
        return ReassignmentProgress(moved=moving, already=0, remaining=have - moving)


def _loan(loan_id: str, collector: str) -> Loan:
    schedule = tuple(
        import_schedule(
            100_000, dt.date(2025, 3, 1), [(dt.date(2025, 4, 5), 50_000, 1_000), (dt.date(2025, 5, 5), 50_000, 500)]
        )
    )
    return Loan(
        loan_id=loan_id,
        borrower=Borrower(name="B", phone="9876543210"),
        status=LoanStatus.ACTIVE,
        principal_paise=100_000,
        disbursement_date=dt.date(2025, 3, 1),
        schedule=schedule,
        delinquency=initial_delinquency(schedule, dt.date(2025, 3, 9)),
        collector_id=collector,
        version=1,
    )


class World:
    def __init__(self, clock: FixedClock, cache_seconds: int = 0) -> None:
        self.clock = clock
        self.audit = InMemoryAuditLog()
        self.store = InMemoryUserStore(audit=self.audit)
        self.loans = InMemoryLoanRepository(audit=self.audit)
        self.reassignment = FakeReassignment()
        self.auth = AuthService(
            users=self.store,
            throttle=InMemoryLoginThrottle(),
            metrics=RecordingMetrics(),
            secret=lambda: SECRET,
            ttl_seconds=3600,
            max_failures=5,
            window_seconds=900,
            iterations=ITERATIONS,
            user_cache_seconds=cache_seconds,
        )
        self.service = UserService(users=self.store, auth=self.auth, reassignment=self.reassignment, loans=self.loans)

    def add(self, username: str, role: str, password: str = OLD_PASSWORD, active: bool = True) -> User:
        user = User(username, role, hash_password(password, ITERATIONS), active=active, version=1)
        self.store.put(user)
        return user

    def token_iat(self, username: str) -> int:
        stored = self.store.users[username]
        return decode_verified(issue_token(username, stored.role, SECRET, 3600).access_token, SECRET).iat

    def user_audits(self, username: str) -> list[Any]:
        return list(self.audit.list(AuditFilter(entity_id=username), 100, None).items)

    def holds(self, collector: str, loans: int) -> None:
        self.reassignment.held[collector] = loans
        for n in range(loans):
            self.loans.loans[f"LN-{collector}-{n}"] = _loan(f"LN-{collector}-{n}", collector)


@pytest.fixture
def clock() -> Iterator[FixedClock]:
    with use_clock(FixedClock(NOW)) as fixed:
        assert isinstance(fixed, FixedClock)
        yield fixed


@pytest.fixture
def world(clock: FixedClock) -> World:
    w = World(clock)
    w.add("root", "admin")
    w.add("meera", "manager")
    w.add("col1", "collector")
    w.add("col2", "collector")
    return w


def new(username: str = "ravi", password: str = GOOD_PASSWORD, role: str = "collector", **kw: Any) -> NewUser:
    return NewUser(username, password, role, **kw)


def test_create_stores_a_verifiable_user_and_audits_it_without_secrets(world: World) -> None:
    user = world.service.create(ADMIN, new(display_name="Ravi Kumar", branch="Pune"))
    assert (user.username, user.role, user.active, user.version) == ("ravi", "collector", True, 1)
    assert verify_password(GOOD_PASSWORD, world.store.users["ravi"].password_hash)
    assert user.created_at == user.updated_at == "2025-03-10T10:00:00.000+05:30"
    assert set(user_dict(user)) == set(PUBLIC_FIELDS)
    [entry] = world.user_audits("ravi")
    assert (entry.action, entry.entity_type, entry.entity_id, entry.actor) == (
        Action.USER_CREATED,
        "user",
        "ravi",
        ADMIN.actor,
    )
    assert entry.before is None and entry.after == user_dict(user)
    assert_no_secret(entry, GOOD_PASSWORD, world.store.users["ravi"].password_hash)


def test_create_refuses_a_taken_username_and_changes_nothing(world: World) -> None:
    before = dict(world.store.users)
    with pytest.raises(Conflict) as caught:
        world.service.create(ADMIN, new(username="col1"))
    assert caught.value.code == "CONFLICT"
    assert world.store.users == before and world.audit.entries == {}


@pytest.mark.parametrize(
    ("username", "password", "fields"),
    [
        ("Ravi", GOOD_PASSWORD, ["username"]),
        ("ravi", "short-pass", ["password"]),
        ("ravi", "PassWord1234", ["password"]),
        ("ravi", "ravi-is-my-password", ["password"]),
        ("r", "abc", ["username", "password"]),
    ],
)
def test_create_lists_every_problem(world: World, username: str, password: str, fields: list[str]) -> None:
    with pytest.raises(ValidationFailed) as caught:
        world.service.create(ADMIN, new(username=username, password=password))
    assert sorted({d["field"] for d in caught.value.details}) == sorted(fields)
    assert password not in json.dumps(caught.value.details) and password not in caught.value.message
    assert "ravi" not in world.store.users and world.audit.entries == {}


@pytest.mark.parametrize("ctx", [MANAGER, COLLECTOR, AUDITOR])
def test_only_admins_create_or_change_users(world: World, ctx: RequestContext) -> None:
    with pytest.raises(Forbidden):
        world.service.create(ctx, new(role="admin"))
    with pytest.raises(Forbidden):
        world.service.update(ctx, "col1", UserChanges(role="admin"))
    assert "ravi" not in world.store.users and world.store.users["col1"].role == "collector"


def test_managers_read_users_collectors_and_auditors_do_not(world: World) -> None:
    assert world.service.get(MANAGER, "col1").username == "col1"
    for ctx in (COLLECTOR, AUDITOR):
        with pytest.raises(Forbidden):
            world.service.get(ctx, "col1")
        with pytest.raises(Forbidden):
            world.service.list(ctx, UserFilter(), 10, None)
    with pytest.raises(NotFound):
        world.service.get(ADMIN, "nobody")


def test_list_filters_and_pages(world: World) -> None:
    world.add("gone", "collector", active=False)
    collectors = world.service.list(ADMIN, UserFilter(role="collector"), 50, None).items
    assert [u.username for u in collectors] == ["col1", "col2", "gone"]
    assert [u.username for u in world.service.list(ADMIN, UserFilter(active=False), 50, None).items] == ["gone"]
    active_collectors = world.service.list(ADMIN, UserFilter(role="collector", active=True), 50, None)
    assert [u.username for u in active_collectors.items] == ["col1", "col2"]
    names, cursor = [], None
    while True:
        page = world.service.list(MANAGER, UserFilter(), 2, cursor)
        names += [u.username for u in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert names == sorted(world.store.users)


def test_update_details_role_and_password(world: World, clock: FixedClock) -> None:
    stored_before = world.store.users["col1"]
    clock.advance(seconds=5)
    outcome = world.service.update(
        ADMIN,
        "col1",
        UserChanges(display_name="Col One", display_name_given=True, role="manager", password=GOOD_PASSWORD),
    )
    user = outcome.user
    assert outcome.reassignment is None and outcome.complete
    assert (user.display_name, user.role, user.version) == ("Col One", "manager", 2)
    assert verify_password(GOOD_PASSWORD, user.password_hash)
    assert user.tokens_valid_after == int(NOW.timestamp()) + 5
    [entry] = world.user_audits("col1")
    assert entry.action is Action.USER_UPDATED
    assert entry.before == user_dict(stored_before)
    assert entry.after == user_dict(user) | {"password_changed": True}
    assert_no_secret(entry, GOOD_PASSWORD, user.password_hash)


def test_a_repeated_change_writes_nothing(world: World) -> None:
    world.service.update(ADMIN, "col1", UserChanges(branch="Pune", branch_given=True))
    again = world.service.update(ADMIN, "col1", UserChanges(branch="Pune", branch_given=True))
    assert again.user.version == 2 and len(world.user_audits("col1")) == 1


def test_a_weak_new_password_is_refused(world: World) -> None:
    with pytest.raises(ValidationFailed) as caught:
        world.service.update(ADMIN, "col1", UserChanges(password="col1-new-password"))
    assert [d["field"] for d in caught.value.details] == ["password"]
    assert world.store.users["col1"].version == 1


def test_update_of_a_missing_user_is_not_found(world: World) -> None:
    with pytest.raises(NotFound):
        world.service.update(ADMIN, "nobody", UserChanges(active=False))


# --- offboarding ------------------------------------------------------------------------------------


def test_deactivating_a_collector_without_loans_needs_no_successor(world: World) -> None:
    outcome = world.service.update(ADMIN, "col1", UserChanges(active=False))
    assert not outcome.user.active and outcome.reassignment is None
    assert world.reassignment.calls == []


def test_deactivating_a_collector_with_loans_needs_reassign_to(world: World) -> None:
    world.holds("col1", 3)
    with pytest.raises(Conflict) as caught:
        world.service.update(ADMIN, "col1", UserChanges(active=False))
    assert caught.value.details == {"active_loans": 3, "reassign_to": "required"}
    assert world.store.users["col1"].active and world.audit.entries == {}


@pytest.mark.parametrize(
    ("successor", "setup"),
    [("col1", None), ("nobody", None), ("meera", None), ("gone", "inactive")],
)
def test_reassign_to_must_be_another_active_collector(world: World, successor: str, setup: str | None) -> None:
    if setup == "inactive":
        world.add("gone", "collector", active=False)
    world.holds("col1", 2)
    with pytest.raises(ValidationFailed) as caught:
        world.service.update(ADMIN, "col1", UserChanges(active=False, reassign_to=successor))
    assert [d["field"] for d in caught.value.details] == ["reassign_to"]
    assert world.store.users["col1"].active and world.reassignment.calls == []


def test_reassign_to_is_only_for_deactivating_a_collector(world: World) -> None:
    for name, changes in [
        ("meera", UserChanges(active=False, reassign_to="col2")),
        ("col1", UserChanges(reassign_to="col2")),
    ]:
        with pytest.raises(ValidationFailed):
            world.service.update(ADMIN, name, changes)


def test_offboarding_moves_the_loans_then_deactivates_then_moves_again(world: World) -> None:
    world.holds("col1", 4)
    order: list[str] = []
    world.reassignment.on_move = lambda: order.append(
        "move:" + ("active" if world.store.users["col1"].active else "inactive")
    )
    outcome = world.service.update(ADMIN, "col1", UserChanges(active=False, reassign_to="col2"), lambda: 20_000)
    assert order == ["move:active", "move:inactive"]
    assert not outcome.user.active and outcome.complete
    assert outcome.reassignment == ReassignmentProgress(moved=4, already=0, remaining=0)
    assert world.reassignment.held == {"col1": 0, "col2": 4}
    assert all(has_budget for _, _, has_budget in world.reassignment.calls)
    [entry] = world.user_audits("col1")
    assert entry.before["active"] is True and entry.after["active"] is False


def test_offboarding_that_stops_for_time_leaves_the_user_active_and_a_repeat_continues(world: World) -> None:
    world.holds("col1", 5)
    world.reassignment.per_call = 2
    changes = UserChanges(active=False, reassign_to="col2", branch="Nashik", branch_given=True)
    first = world.service.update(ADMIN, "col1", changes)
    assert not first.complete and first.reassignment == ReassignmentProgress(2, 0, 3)
    assert first.user.active and first.user.branch is None  # nothing about the user changes yet
    assert world.store.users["col1"].active and world.audit.entries == {}
    second = world.service.update(ADMIN, "col1", changes)
    assert not second.complete and world.store.users["col1"].active
    world.reassignment.per_call = None
    third = world.service.update(ADMIN, "col1", changes)
    assert third.complete and not third.user.active and third.user.branch == "Nashik"
    assert world.reassignment.held["col1"] == 0 and world.reassignment.held["col2"] == 5
    assert len(world.user_audits("col1")) == 1
    fourth = world.service.update(ADMIN, "col1", changes)  # after the end: nothing more is written
    assert fourth.complete and len(world.user_audits("col1")) == 1


def test_a_loan_assigned_between_the_move_and_the_deactivation_is_moved_too(world: World) -> None:
    world.holds("col1", 1)
    moves = 0

    def late_assignment() -> None:
        nonlocal moves
        moves += 1
        if moves == 1:
            return
        world.reassignment.held["col1"] += 1  # assigned just before the deactivation landed

    world.reassignment.on_move = late_assignment
    outcome = world.service.update(ADMIN, "col1", UserChanges(active=False, reassign_to="col2"))
    assert outcome.reassignment == ReassignmentProgress(moved=2, already=0, remaining=0)
    assert world.reassignment.held["col1"] == 0


# --- ending tokens ----------------------------------------------------------------------------------


def test_a_password_change_ends_older_tokens_only(world: World, clock: FixedClock) -> None:
    old_iat = world.token_iat("col1")
    world.auth.require_current("col1", old_iat)
    clock.advance(seconds=1)
    world.service.update(ADMIN, "col1", UserChanges(password=GOOD_PASSWORD))
    with pytest.raises(Unauthenticated):
        world.auth.require_current("col1", old_iat)
    world.auth.require_current("col1", world.token_iat("col1"))  # a token issued since is good


def test_a_deactivation_ends_every_token_and_a_reactivation_does_not_revive_old_ones(
    world: World, clock: FixedClock
) -> None:
    old_iat = world.token_iat("col1")
    clock.advance(seconds=1)
    world.service.update(ADMIN, "col1", UserChanges(active=False))
    for iat in (old_iat, old_iat + 3600):
        with pytest.raises(Unauthenticated):
            world.auth.require_current("col1", iat)
    clock.advance(seconds=1)
    world.service.update(ADMIN, "col1", UserChanges(active=True))
    with pytest.raises(Unauthenticated):
        world.auth.require_current("col1", old_iat)
    world.auth.require_current("col1", world.token_iat("col1"))


def test_a_role_change_does_not_end_tokens(world: World, clock: FixedClock) -> None:
    iat = world.token_iat("col1")
    clock.advance(seconds=1)
    world.service.update(ADMIN, "col1", UserChanges(role="manager"))
    world.auth.require_current("col1", iat)  # the old token keeps its old role until it expires


def test_tokens_of_missing_users_are_refused(world: World) -> None:
    with pytest.raises(Unauthenticated):
        world.auth.require_current("nobody", int(NOW.timestamp()))


def test_authenticate_decodes_then_checks(world: World, clock: FixedClock) -> None:
    token = issue_token("col1", "collector", SECRET, 3600).access_token
    assert world.auth.authenticate(token).actor == Actor("col1", "collector")
    clock.advance(seconds=1)
    world.store.put(dataclasses.replace(world.store.users["col1"], active=False))
    with pytest.raises(Unauthenticated) as caught:
        world.auth.authenticate(token)
    assert token not in caught.value.message


def test_a_storage_failure_is_unavailable_not_a_pass(world: World) -> None:
    world.store.fail_reads = Unavailable("the database is not answering")
    with pytest.raises(Unavailable):
        world.auth.require_current("col1", int(NOW.timestamp()))


def test_the_user_state_is_cached_for_user_cache_seconds(clock: FixedClock) -> None:
    w = World(clock, cache_seconds=60)
    w.add("col1", "collector")
    iat = w.token_iat("col1")
    w.auth.require_current("col1", iat)
    reads = w.store.gets
    # Another container deactivates the user: this one does not know until its cache runs out.
    w.store.put(dataclasses.replace(w.store.users["col1"], active=False, tokens_valid_after=iat + 1))
    clock.advance(seconds=59)
    w.auth.require_current("col1", iat)
    assert w.store.gets == reads
    clock.advance(seconds=1)
    with pytest.raises(Unauthenticated):
        w.auth.require_current("col1", iat)
    assert w.store.gets == reads + 1


def test_no_cache_reads_every_time(world: World) -> None:
    iat = world.token_iat("col1")
    reads = world.store.gets
    for _ in range(3):
        world.auth.require_current("col1", iat)
    assert world.store.gets == reads + 3


def test_a_change_in_this_container_is_seen_at_once_despite_the_cache(clock: FixedClock) -> None:
    w = World(clock, cache_seconds=60)
    w.add("root", "admin")
    w.add("col1", "collector")
    iat = w.token_iat("col1")
    w.auth.require_current("col1", iat)
    clock.advance(seconds=1)
    w.service.update(ADMIN, "col1", UserChanges(active=False))
    with pytest.raises(Unauthenticated):
        w.auth.require_current("col1", iat)


def test_add_user_still_creates_and_replaces(world: World, clock: FixedClock) -> None:
    from chalicelib.domain.roles import Role

    created = world.auth.add_user("Demo", "demo-pass", Role.MANAGER)
    assert (created.username, created.version, created.tokens_valid_after) == ("demo", 1, 0)
    iat = world.token_iat("demo")
    clock.advance(seconds=1)
    replaced = world.auth.add_user("demo", "demo-pass-2", Role.MANAGER)
    assert replaced.version == 2 and replaced.created_at == created.created_at
    with pytest.raises(Unauthenticated):
        world.auth.require_current("demo", iat)


def assert_no_secret(entry: Any, password: str, password_hash: str) -> None:
    text = json.dumps({"before": entry.before, "after": entry.after, "reason": entry.reason})
    assert password not in text and password_hash not in text
    assert "password_hash" not in text and "tokens_valid_after" not in text


@pytest.mark.parametrize("changes", [UserChanges(active=False), UserChanges(role="manager")])
def test_the_last_active_admin_cannot_be_deactivated_or_demoted(world: World, changes: UserChanges) -> None:
    with pytest.raises(Conflict, match="last active admin"):
        world.service.update(ADMIN, "root", changes)
    assert world.store.users["root"].active and world.store.users["root"].role == "admin"
    assert world.audit.entries == {}

    world.add("second", "admin")
    world.add("retired", "admin", active=False)  # an inactive admin does not count
    outcome = world.service.update(ADMIN, "root", changes)
    assert (outcome.user.active, outcome.user.role) != (True, "admin")
    with pytest.raises(Conflict, match="last active admin"):
        world.service.update(ADMIN, "second", changes)


def test_a_collector_holding_loans_keeps_the_role_until_they_move(world: World) -> None:
    world.holds("col1", 2)
    with pytest.raises(Conflict, match="still holds active loans"):
        world.service.update(ADMIN, "col1", UserChanges(role="manager"))
    assert world.store.users["col1"].role == "collector"

    world.service.update(ADMIN, "col2", UserChanges(role="manager"))  # no loans: free to change
    assert world.store.users["col2"].role == "manager"
