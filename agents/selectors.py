from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from django.db.models import Count, F, QuerySet, Sum
from django.db.models.functions import TruncDate

from agents.models import AgentRun, UsageRecord


def run_get_for_user(*, run_id: str, user: Any) -> AgentRun | None:
    """The run if `user` may watch it: tenant staff see every run of their tenant, others only their own.
    Any malformed or foreign id gives None, like a missing one."""
    try:
        uuid.UUID(str(run_id))
    except ValueError:
        return None
    runs = AgentRun.objects.select_related("agent")
    if not user.is_staff:
        runs = runs.filter(user_email=user.email)
    return runs.filter(pk=run_id).first()


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
        .annotate(runs=Count("id"), tokens_in=Sum("tokens_in"), tokens_out=Sum("tokens_out"))
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
        }
        for row in ordered
    ]
