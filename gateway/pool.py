"""Which member the next client connection goes to.

A member is *usable* when it is active (its last dial did not fail) and not known to be unhealthy (the
optional health check); when no member is usable, active but unhealthy members are still chosen — only
failed dials ever make the gateway refuse a client. Among the candidates, the gateway keeps etcd's
choice rule: the lowest SRV priority class wins; inside it, members with a weight are picked at random
in proportion to their weight (a weight-0 member then gets a 1% chance), otherwise round-robin.
Members from ``--endpoints`` all have priority 0 and weight 0, so that is plain round-robin.

Invariants: the pool never blocks and never does I/O — dialing, re-probing and health checks live in
:mod:`gateway.proxy` and :mod:`gateway.health`, which report back through :meth:`EndpointPool.mark_failed`,
:meth:`EndpointPool.mark_active` and :meth:`EndpointPool.set_healthy`. Unlike etcd's round-robin (which
walks all members regardless of priority), round-robin stays inside the best priority class.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from gateway.config import Endpoint

_UNWEIGHTED_CHANCE = 0.01


@dataclass(slots=True)
class MemberState:
    endpoint: Endpoint
    active: bool = True
    healthy: bool = True

    @property
    def usable(self) -> bool:
        return self.active and self.healthy


class EndpointPool:
    def __init__(self, endpoints: Iterable[Endpoint], rng: random.Random | None = None) -> None:
        self.members = [MemberState(ep) for ep in dict.fromkeys(endpoints)]
        if not self.members:
            raise ValueError("no endpoints found")
        self._by_endpoint = {m.endpoint: m for m in self.members}
        self._rng = rng or random.Random()
        self._next = 0

    def __getitem__(self, endpoint: Endpoint) -> MemberState:
        return self._by_endpoint[endpoint]

    def pick(self, exclude: Collection[Endpoint] = ()) -> Endpoint | None:
        """The member for a new connection, or ``None`` when every member's dial failed.

        Unhealthy members are chosen only when no healthy one is left: while a whole cluster is
        without a leader, a client is better served by the member's own error than by a reset."""
        allowed = [m for m in self.members if m.active and m.endpoint not in exclude]
        healthy = [m.endpoint for m in allowed if m.healthy]
        candidates = healthy or [m.endpoint for m in allowed]
        if not candidates:
            return None
        best = min(ep.priority for ep in candidates)
        best_class = [ep for ep in candidates if ep.priority == best]
        weighted = [ep for ep in best_class if ep.weight > 0]
        unweighted = [ep for ep in best_class if ep.weight == 0]
        if weighted and not (unweighted and self._rng.random() < _UNWEIGHTED_CHANCE):
            return self._weighted_choice(weighted)
        return self._round_robin(unweighted)

    def _weighted_choice(self, weighted: list[Endpoint]) -> Endpoint:
        ticket = self._rng.randrange(sum(ep.weight for ep in weighted))
        for ep in weighted:
            ticket -= ep.weight
            if ticket < 0:
                return ep
        return weighted[-1]

    def _round_robin(self, choices: list[Endpoint]) -> Endpoint:
        chosen = choices[self._next % len(choices)]
        self._next += 1
        return chosen

    def mark_failed(self, endpoint: Endpoint) -> bool:
        """A dial failed: skip the member until a re-probe succeeds. True if it was active before."""
        member = self._by_endpoint[endpoint]
        was_active, member.active = member.active, False
        return was_active

    def mark_active(self, endpoint: Endpoint) -> None:
        self._by_endpoint[endpoint].active = True

    def set_healthy(self, endpoint: Endpoint, healthy: bool) -> bool:
        """Record a health verdict; True if it changed."""
        member = self._by_endpoint[endpoint]
        changed = member.healthy != healthy
        member.healthy = healthy
        return changed

    def usable_count(self) -> int:
        return sum(1 for m in self.members if m.usable)
