from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from django.db import connection
from django.db.models import Count, F, Prefetch, Q, QuerySet, Sum
from django.db.models.functions import Coalesce, TruncDate

from agents.models import Agent, AgentRun, AgentTool, RunStep, SubAgentLink, UsageRecord
from agents.runtime.streams import run_events_since


def run_get_for_user(*, run_id: str, user: Any, see_all: bool | None = None) -> AgentRun | None:
    """The run if `user` may watch it: tenant staff see every run of their tenant, others only their own
    (`see_all` overrides the staff test, e.g. by an API key's scope). Any malformed or foreign id gives
    None, like a missing one."""
    try:
        uuid.UUID(str(run_id))
    except ValueError:
        return None
    return runs_for_user(user=user, see_all=user.is_staff if see_all is None else see_all).filter(pk=run_id).first()


def runs_for_user(*, user: Any, see_all: bool) -> QuerySet[AgentRun]:
    """Every run of the tenant (`see_all`), or the runs started by `user`; newest first."""
    runs = AgentRun.objects.select_related("agent", "version")
    if not see_all:
        runs = runs.filter(user_email=user.email)
    return runs.order_by("-created_at")


def run_events_after(*, run: AgentRun, after: int = 0) -> list[dict]:
    """The run's events with seq > `after`, in order: from its Redis stream while that is kept (text
    deltas included), else rebuilt from the stored steps (every event but the text deltas)."""
    events = run_events_since(connection.schema_name, str(run.id), after)
    if events or run.last_seq <= after:
        return events
    return [
        {
            "type": step.type,
            "run_id": str(run.id),
            "seq": step.seq,
            "ts": round(step.created_at.timestamp(), 3),
            "agent": step.agent_path,
            "data": step.data,
        }
        for step in RunStep.objects.filter(run=run, seq__gt=after).order_by("seq")
    ]


def agents_visible(*, include_drafts: bool) -> QuerySet[Agent]:
    """The tenant's agents: only published ones, or (`include_drafts`) all, with what their API
    representation needs fetched in a fixed number of queries."""
    agents = Agent.objects.select_related("published_version").order_by("name", "slug")
    if not include_drafts:
        return agents.filter(published_version__isnull=False)
    return agents.prefetch_related(
        Prefetch("tools", queryset=AgentTool.objects.select_related("mcp_server").order_by("id")),
        Prefetch("sub_agent_links", queryset=SubAgentLink.objects.select_related("child").order_by("child__slug")),
    )


USAGE_GROUPS = {
    "day": TruncDate("created_at"),
    "agent": F("agent_slug"),
    "user": F("user_email"),
    "key": F("api_key__name"),
}


def usage_summary(
    *, records: QuerySet[UsageRecord] | None = None, group_by: str = "day", since: date | None = None
) -> list[dict]:
    """Tokens and runs per day (or agent, user, API key), oldest day / biggest user first."""
    if group_by not in USAGE_GROUPS:
        raise ValueError(f"group_by is one of {', '.join(USAGE_GROUPS)}")
    records = UsageRecord.objects.all() if records is None else records
    if since is not None:
        records = records.filter(created_at__date__gte=since)
    rows = (
        records.annotate(group=USAGE_GROUPS[group_by])
        .values("group")
        .annotate(  # the estimated sums first: later in the same call, "tokens_in" names the aggregate
            estimated_in=Coalesce(Sum("tokens_in", filter=Q(estimated=True)), 0),
            estimated_out=Coalesce(Sum("tokens_out", filter=Q(estimated=True)), 0),
            runs=Count("id"),
            tokens_in=Sum("tokens_in"),
            tokens_out=Sum("tokens_out"),
        )
        .annotate(tokens=F("tokens_in") + F("tokens_out"))
    )
    ordered = rows.order_by("group") if group_by == "day" else rows.order_by("-tokens", "group")
    return [
        {
            group_by: row["group"].isoformat() if isinstance(row["group"], date) else (row["group"] or ""),
            "runs": row["runs"],
            "tokens_in": row["tokens_in"],
            "tokens_out": row["tokens_out"],
            "tokens": row["tokens"],
            "estimated_tokens": row["estimated_in"] + row["estimated_out"],
        }
        for row in ordered
    ]
