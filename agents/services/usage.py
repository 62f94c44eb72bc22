"""Token usage: one UsageRecord per finished run, monthly counters in Redis for the quota checks (seeded
from the records when missing, so a flushed Redis never resets anyone's quota), and the checks themselves.

What callers may rely on: `usage_quota_check` raises QuotaExceeded (429, with the seconds until the next
month) when the organisation's monthly token budget, or the API key's own monthly limit, is used up, as its process
read the counter within the last `USAGE_QUOTA_READ_VALID_S` seconds (one second by default)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from agents.models import AgentRun, UsageRecord
from agents.runtime.streams import redis_client
from nexent_site.errors import ApplicationError
from nexent_site.statements import Sql, insert_sql, marked_saved
from nexent_site.tenancy import tenant_redis_scope

COUNTER_TTL_S = 40 * 24 * 3600


class QuotaExceeded(ApplicationError):
    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, code="quota_exceeded", status=429)
        self.retry_after = retry_after


def _month_start(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month_start(now: datetime | None = None) -> datetime:
    start = _month_start(now)
    return start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)


def usage_counter_key(api_key_id: int | None = None) -> str:
    scope = f"key{api_key_id}" if api_key_id else "all"
    return f"usage:tokens:{tenant_redis_scope()}:{scope}:{_month_start():%Y%m}"


def _tokens_from_records(api_key_id: int | None) -> int:
    records = UsageRecord.objects.filter(created_at__gte=_month_start())
    if api_key_id:
        records = records.filter(api_key_id=api_key_id)
    totals = records.aggregate(tokens_in=Coalesce(Sum("tokens_in"), 0), tokens_out=Coalesce(Sum("tokens_out"), 0))
    return totals["tokens_in"] + totals["tokens_out"]


# counter key -> (when this process last read it, the tokens it held); the key names the tenant and the month
_read_at: dict[str, tuple[float, int]] = {}
READ_AT_KEPT = 10_000  # entries kept before the map starts again from empty


def usage_month_tokens(*, api_key_id: int | None = None) -> int:
    """Tokens used this calendar month (UTC) by the tenant, or by one API key."""
    return _month_tokens_read(usage_counter_key(api_key_id), api_key_id)


def _month_tokens_read(key: str, api_key_id: int | None) -> int:
    """The counter `key` (`api_key_id`'s) read from Redis, seeded from the records when missing; noted in `_read_at`."""
    client = redis_client()
    value = client.get(key)
    if value is None:
        value = _tokens_from_records(api_key_id)
        client.set(key, value, nx=True, ex=COUNTER_TTL_S)
    if len(_read_at) >= READ_AT_KEPT:
        _read_at.clear()
    _read_at[key] = (time.monotonic(), int(value))
    return int(value)


def _month_tokens_for_check(api_key_id: int | None = None) -> int:
    """`usage_month_tokens` as this process read it within the last `USAGE_QUOTA_READ_VALID_S` seconds, else read
    now. A quota check is late already by every run still being written (a run counts when it ends): a second more
    spares nearly every chat turn a Redis round trip on its way to the first token, which under load waits for a CPU
    and then for the web process's GIL."""
    key = usage_counter_key(api_key_id)
    read = _read_at.get(key)
    if read is not None and time.monotonic() - read[0] < settings.USAGE_QUOTA_READ_VALID_S:
        return read[1]
    return _month_tokens_read(key, api_key_id)


# INCRBY only where the counter exists: one that does not is seeded from the records instead.
_INCREMENT_EXISTING = "if redis.call('exists', KEYS[1]) == 1 then return redis.call('incrby', KEYS[1], ARGV[1]) end"


def usage_record_sql(*, run: AgentRun) -> tuple[UsageRecord, Sql]:
    """A finished run's usage record (not saved) and its `INSERT`, which writes nothing when the run has one
    already (its task delivered twice) and returns the new record's id: one statement, where an `INSERT` failing
    on the run's unique constraint would need a savepoint (two more round trips) to keep the caller's transaction
    usable. The run's close puts it in its own statement; give what it returned to `usage_recorded`."""
    record = UsageRecord(
        run=run,
        agent_id=run.agent_id,
        agent_slug=run.spec.get("slug", "") if isinstance(run.spec, dict) else "",
        user_email=run.user_email,
        api_key_id=run.api_key_id,
        trigger=run.trigger,
        tokens_in=run.tokens_in,
        tokens_out=run.tokens_out,
        estimated=run.usage_estimated,
    )
    return record, insert_sql(UsageRecord, [record], returning=True, ignore_conflicts=True)


def usage_recorded(record: UsageRecord, pk: int | None) -> UsageRecord:
    """After `usage_record_sql`'s statement (`pk`: the id it returned): the new record, its tokens added to this
    month's counters once the current transaction (if any) commits; or the run's record written before."""
    if pk is None:
        return UsageRecord.objects.get(run_id=record.run_id)
    marked_saved([record], [pk])
    if record.tokens:
        transaction.on_commit(lambda: _usage_count(record))
    return record


def _usage_count(record: UsageRecord) -> None:
    client = redis_client()
    for api_key_id in {None, record.api_key_id}:
        key = usage_counter_key(api_key_id)
        # The month's sum is read from the records only when the counter is missing (it includes this run).
        if client.eval(_INCREMENT_EXISTING, 1, key, record.tokens) is None and not client.set(
            key, _tokens_from_records(api_key_id), nx=True, ex=COUNTER_TTL_S
        ):
            client.incrby(key, record.tokens)


def usage_quota_check(*, api_key: Any = None) -> None:
    """Refuse a new run when this month's budget (the organisation's, or the key's own) is used up (as read within
    the last `USAGE_QUOTA_READ_VALID_S` seconds)."""
    tenant = getattr(connection, "tenant", None)
    budget = getattr(tenant, "monthly_token_budget", 0) or 0
    if budget and _month_tokens_for_check() >= budget:
        raise QuotaExceeded(
            f"This organisation has used its {budget:,} tokens for this month.", retry_after=_seconds_to_next_month()
        )
    limit = getattr(api_key, "monthly_token_limit", 0) or 0
    if limit and _month_tokens_for_check(api_key.pk) >= limit:
        raise QuotaExceeded(
            f"This API key has used its {limit:,} tokens for this month.", retry_after=_seconds_to_next_month()
        )


def _seconds_to_next_month() -> int:
    return max(1, int((_next_month_start() - timezone.now()).total_seconds()))
