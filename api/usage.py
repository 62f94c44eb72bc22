"""What the admin's usage page shows: tokens per day and per agent, and this month's quota consumption
(the organisation's budget and each API key's own limit)."""

from __future__ import annotations

from datetime import date, timedelta

from django.db import connection

from agents.selectors import usage_summary
from agents.services.usage import usage_month_tokens
from api.models import ApiKey

USAGE_CHART_DAYS = 30


def _percent(part: int, whole: int) -> int:
    return min(100, round(100 * part / whole)) if whole else 0


def usage_dashboard(*, since: date) -> dict:
    by_day = {row["day"]: row for row in usage_summary(group_by="day", since=since)}
    days = [since + timedelta(days=offset) for offset in range((date.today() - since).days + 1)]
    daily = [by_day.get(day.isoformat(), {"tokens": 0, "runs": 0}) | {"day": day} for day in days]
    peak = max((row["tokens"] for row in daily), default=0)
    for row in daily:
        row["percent"] = _percent(row["tokens"], peak)
    per_agent = usage_summary(group_by="agent", since=since)[:15]
    top = max((row["tokens"] for row in per_agent), default=0)
    for row in per_agent:
        row["percent"] = _percent(row["tokens"], top)

    tenant = connection.tenant
    used = usage_month_tokens()
    budget = getattr(tenant, "monthly_token_budget", 0)
    keys = []
    for key in ApiKey.objects.filter(revoked_at__isnull=True).select_related("user"):
        key_used = usage_month_tokens(api_key_id=key.pk)
        keys.append(
            {
                "key": key,
                "used": key_used,
                "limit": key.monthly_token_limit,
                "percent": _percent(key_used, key.monthly_token_limit),
            }
        )
    return {
        "usage_since": since,
        "usage_daily": daily,
        "usage_per_agent": per_agent,
        "usage_month": {"used": used, "budget": budget, "percent": _percent(used, budget)},
        "usage_keys": keys,
        "usage_rate_limit": getattr(tenant, "api_requests_per_minute", 0),
    }
