"""Spend budgets per tenant (``ROUTEBANDIT_BUDGETS``, USD per day or month).

A tenant's spend is what its decisions of the current period cost: the cost the
gateway measured (``outcomes``), else the cost its feedback reported or was charged
in the reward. It is read from the database every ``refresh_s`` (so several processes
see one spend) and kept in memory, so routing never waits for it.

* Below ``soft`` of the budget (default 80%) nothing changes.
* From there to the budget the reward's cost weight is multiplied, linearly up to
  ``max_cost_factor`` (default 20x): the policy shifts the tenant to cheaper models.
* At the budget routing is refused: ``402`` ``budget_exceeded`` (OpenAI's format on
  the chat endpoint), with ``Retry-After`` set to the start of the next period.

The spend can run over the budget by what requests in flight cost and by one refresh
interval of traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import bindparam, text

from bandit.reward import RewardWeights
from feedback.errors import StoreError
from serving.errors import BudgetExceededError
from serving.tasks import cancel

log = logging.getLogger("routebandit.budget")


class BudgetSettings(BaseSettings):
    """``ROUTEBANDIT_BUDGETS='{"acme": 50}'`` and ``ROUTEBANDIT_BUDGET_*``."""

    model_config = SettingsConfigDict(env_prefix="ROUTEBANDIT_", extra="ignore", frozen=True)

    budgets: dict[str, float] = Field(default_factory=dict,
                                      description="USD per period, by tenant.")
    budget_period: Literal["day", "month"] = "day"
    budget_soft: float = Field(default=0.8, gt=0, lt=1,
                               description="Fraction of the budget where the shift starts.")
    budget_max_cost_factor: float = Field(default=20.0, ge=1)
    budget_refresh_s: float = Field(default=5.0, gt=0)


def period_bounds(now: datetime, period: str) -> tuple[datetime, datetime]:
    """The current period's start and the next one's (UTC).

    >>> period_bounds(datetime(2026, 11, 28, 9, 30, tzinfo=timezone.utc), "month")[1]
    datetime.datetime(2026, 12, 1, 0, 0, tzinfo=datetime.timezone.utc)
    """
    start = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return start, start + timedelta(days=1)
    start = start.replace(day=1)
    nxt = (start + timedelta(days=32)).replace(day=1)
    return start, nxt


_SPEND = text(
    "SELECT d.tenant, SUM(COALESCE(o.cost_usd, f.cost_usd, f.reward_cost_usd, 0)) "
    "FROM decisions d LEFT JOIN outcomes o ON o.decision_id = d.id "
    "LEFT JOIN feedback f ON f.decision_id = d.id "
    "WHERE d.created_at >= :since AND d.tenant IN :tenants GROUP BY d.tenant"
).bindparams(bindparam("tenants", expanding=True))


class Budgets:
    """What each budgeted tenant has spent this period, and what that means for routing."""

    def __init__(self, store: Any, settings: BudgetSettings) -> None:
        self.store = store
        self.settings = settings
        self.spent: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    def refresh(self, now: datetime | None = None) -> dict[str, float]:
        """Read every budgeted tenant's spend this period from the database."""
        start, _ = period_bounds(now or datetime.now(timezone.utc), self.settings.budget_period)
        since: Any = start
        if self.store.dialect == "sqlite":  # stored as naive UTC text
            since = start.strftime("%Y-%m-%d %H:%M:%S.%f")
        try:
            with self.store.engine.connect() as conn:
                rows = conn.execute(_SPEND, {"since": since,
                                             "tenants": list(self.settings.budgets)}).all()
        except Exception as exc:
            raise StoreError(f"budget spend: {exc.__class__.__name__}: {exc}") from exc
        self.spent = {tenant: float(total or 0.0) for tenant, total in rows}
        return self.spent

    def apply(self, tenant: str, weights: RewardWeights) -> RewardWeights:
        """The weights to route ``tenant`` with; raises at the budget."""
        budget = self.settings.budgets.get(tenant)
        if budget is None:
            return weights
        spent = self.spent.get(tenant, 0.0)
        if spent >= budget:
            now = datetime.now(timezone.utc)
            _, reset = period_bounds(now, self.settings.budget_period)
            raise BudgetExceededError(
                f"tenant {tenant!r} has spent ${spent:.4f} of its ${budget:.2f} "
                f"{self.settings.budget_period}ly budget; routing resumes at "
                f"{reset.isoformat()}",
                retry_after=max(1, int((reset - now).total_seconds())),
            )
        soft = self.settings.budget_soft * budget
        if spent <= soft:
            return weights
        fraction = (spent - soft) / (budget - soft)
        factor = 1.0 + (self.settings.budget_max_cost_factor - 1.0) * fraction
        return replace(weights, cost=max(weights.cost, 0.02) * factor)

    async def start(self) -> None:
        await asyncio.to_thread(self.refresh)
        self._task = asyncio.create_task(self._loop(), name="routebandit-budgets")

    async def stop(self) -> None:
        await cancel(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.budget_refresh_s)
            try:
                await asyncio.to_thread(self.refresh)
            except StoreError as exc:  # keep the last known spend; retried next time
                log.error("budgets: %s", exc)


async def start_budgets(service: Any, store: Any, stack: contextlib.AsyncExitStack) -> None:
    """Track budgets when any are configured (``service.budgets`` applies them)."""
    settings = BudgetSettings()
    if not settings.budgets:
        return
    budgets = Budgets(store, settings)
    await budgets.start()
    stack.push_async_callback(budgets.stop)
    service.budgets = budgets


__all__ = ["BudgetSettings", "Budgets", "period_bounds", "start_budgets"]
