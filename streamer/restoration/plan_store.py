"""Device plans kept for reuse, a bounded number of each kind, least recently used dropped.

A plan (device buffers, a chosen convolution method) is made per frame shape and PSF size;
building one costs allocation and sometimes timing on the device, so a stream of frames must
not pay it again — yet a stream of many shapes must not grow device memory without bound.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable, TypeVar

Plan = TypeVar("Plan")


class PlanStore:
    """At most ``limit`` plans of each kind; the least recently used go first.

    Parameters
    ----------
    limit : int
        Plans kept per kind (``"background"``, ``"richardson_lucy"``, ``"median"``…).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kinds: dict[str, OrderedDict[Hashable, object]] = {}

    def get(self, kind: str, key: Hashable) -> object | None:
        """The plan of ``kind`` under ``key`` (now the most recently used), or None."""
        plans = self._kinds.get(kind)
        plan = plans.get(key) if plans is not None else None
        if plan is not None:
            plans.move_to_end(key)
        return plan

    def put(self, kind: str, key: Hashable, plan: Plan) -> Plan:
        """Keep ``plan`` (replacing one under the same key); returns it."""
        plans = self._kinds.setdefault(kind, OrderedDict())
        plans[key] = plan
        plans.move_to_end(key)
        while len(plans) > self.limit:
            plans.popitem(last=False)
        return plan

    def get_or_make(self, kind: str, key: Hashable, make: Callable[[], Plan]) -> Plan:
        """The plan under ``key``, made (and kept) on first use."""
        plan = self.get(kind, key)
        return plan if plan is not None else self.put(kind, key, make())  # type: ignore[return-value]

    def count(self, *kinds: str) -> int:
        """Plans held of ``kinds`` (all kinds when none is named)."""
        return sum(len(plans) for kind, plans in self._kinds.items() if not kinds or kind in kinds)
