"""Roles (docs/rules.md, "Roles") and who may do what. One table, so a reviewer can read the whole policy at once."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    MANAGER = "manager"
    COLLECTOR = "collector"
    AUDITOR = "auditor"


ALL_ROLES = frozenset(Role)
READ_LOANS = frozenset({Role.ADMIN, Role.MANAGER, Role.COLLECTOR, Role.AUDITOR})
MANAGE_LOANS = frozenset({Role.ADMIN, Role.MANAGER})
READ_AUDIT = frozenset({Role.ADMIN, Role.AUDITOR})
PAY_LOANS = frozenset({Role.ADMIN, Role.MANAGER, Role.COLLECTOR})
"""Collectors may pay only loans assigned to them; the loan lookup enforces that with a 404."""
ADMIN_ONLY = frozenset({Role.ADMIN})
READ_ALL = frozenset({Role.ADMIN, Role.MANAGER, Role.AUDITOR})
"""Portfolio-wide reads (job history, escalations): not collectors, who see only their own loans."""
READ_FLAGS = frozenset({Role.ADMIN, Role.AUDITOR})
MANAGE_USERS = ADMIN_ONLY
"""Creating users and changing them (role, password, deactivation): admin only."""
READ_USERS = frozenset({Role.ADMIN, Role.MANAGER})
"""Managers read users to assign loans to collectors; they change none."""
