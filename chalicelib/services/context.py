"""Who is asking, from where: passed explicitly into every service call that changes or reveals data."""

from __future__ import annotations

from dataclasses import dataclass

from chalicelib.domain.audit import Actor
from chalicelib.domain.errors import Forbidden
from chalicelib.domain.roles import Role


@dataclass(frozen=True, slots=True)
class RequestContext:
    actor: Actor
    source_ip: str | None = None
    request_id: str | None = None

    @property
    def role(self) -> Role:
        return Role(self.actor.role)

    @property
    def is_collector(self) -> bool:
        return self.role is Role.COLLECTOR

    def require(self, allowed: frozenset[Role]) -> None:
        if self.role not in allowed:
            raise Forbidden(f"role {self.role.value} may not do this")
