"""Agents called through the API's protocol endpoints (the OpenAI-compatible /v1 and the MCP server): which
agents a key may call, starting a run for the key, and following the run to its end.

The sync functions run in the tenant's schema (async callers hop with `run_in_tenant`); the async ones
follow the run's Redis stream and hold no thread while they wait. A run nobody waits for any more (the
client went away) is cancelled, so it stops spending tokens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from django.conf import settings
from django.db.models import QuerySet

from agents.models import Agent, AgentRun
from agents.relay import run_events_live
from agents.runtime.events import TERMINAL_EVENT
from agents.services.runs import run_cancel, run_start
from api.models import ApiKey
from nexent_site.errors import ApplicationError
from nexent_site.tenancy import run_in_tenant

IDLE_TICK_S = 15
# Beyond its deadline the watchdog closes a run whose worker died; past this much more, stop waiting.
GIVE_UP_AFTER_DEADLINE_S = 60


def agents_callable() -> QuerySet[Agent]:
    """The agents an API key (with the `chat` scope) may call: every published agent of the tenant."""
    return Agent.objects.filter(published_version__isnull=False).select_related("published_version").order_by("slug")


def agent_get_callable(*, slug: str) -> Agent | None:
    return agents_callable().filter(slug=slug).first()


def agent_call_start(
    *, key: ApiKey, agent: Agent, messages: list[dict], overrides: dict | None = None, end_user: str = ""
) -> AgentRun:
    """A queued run of the agent's published version, recorded as the key's (trigger API, the key's user).
    QuotaExceeded when the month's token budget is used up; ValidationError naming `messages` when they
    cannot be run."""
    return run_start(
        agent=agent,
        messages=messages,
        trigger=AgentRun.Trigger.API,
        user_email=key.user.email,
        api_key=key,
        end_user=end_user,
        overrides=overrides,
    )


async def run_follow(tenant: Any, run: AgentRun) -> AsyncIterator[dict | None]:
    """The run's events up to `run_finished` (inclusive), and None every IDLE_TICK_S without one. Closing
    this before the end cancels the run. ApplicationError (504) if the run is still not over well past its
    deadline (the watchdog should have closed it by then)."""
    give_up_at = time.time() + GIVE_UP_AFTER_DEADLINE_S + settings.RUN_WATCHDOG_GRACE_S
    if run.deadline_at is not None:
        give_up_at += max(0.0, run.deadline_at.timestamp() - time.time())
    finished = False
    try:
        async with aclosing(run_events_live(tenant.schema_name, str(run.id), 0, IDLE_TICK_S)) as events:
            async for event in events:
                if event is None and time.time() > give_up_at:
                    raise ApplicationError("The agent's run did not finish in time.", code="run_lost", status=504)
                finished = event is not None and event["type"] == TERMINAL_EVENT
                yield event
    finally:
        if not finished:
            await asyncio.shield(run_in_tenant(tenant, _cancel_unless_finished, run.pk))


async def run_wait(tenant: Any, run: AgentRun) -> AgentRun:
    """Wait for the run to end and return it as stored (the source of truth once it has ended)."""
    async with aclosing(run_follow(tenant, run)) as events:
        async for _ in events:
            pass
    return await run_in_tenant(tenant, AgentRun.objects.get, pk=run.pk)


def _cancel_unless_finished(run_id: Any) -> None:
    run = AgentRun.objects.filter(pk=run_id).first()
    if run is not None and not run.is_finished:
        run_cancel(run=run)
