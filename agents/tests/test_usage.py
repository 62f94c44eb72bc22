"""The month's token counters in Redis: a finished run adds to them, a missing one is seeded from the usage
records, a run counted twice (a task delivered twice) counts once, and a new run's quota check reads them at most
once a second per process, each tenant's on its own. Real PostgreSQL and Redis."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any

import pytest
from django.db.models import Sum
from django.test import override_settings
from django_tenants.utils import tenant_context

from agents.models import Agent, AgentRun, RunStatus, UsageRecord
from agents.services.usage import (
    QuotaExceeded,
    usage_counter_key,
    usage_month_tokens,
    usage_quota_check,
    usage_record_sql,
    usage_recorded,
)
from nexent_site.redis_pool import redis_client
from nexent_site.statements import Statement
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def in_tenant_a(tenant_a: Tenant) -> Iterator[None]:
    """Tenant A's schema, with its counter removed afterwards (the records are rolled back with the test)."""
    with tenant_context(tenant_a):
        yield
        redis_client().delete(usage_counter_key())


def usage_record(run: AgentRun) -> UsageRecord:
    """A run's usage recorded as the run's close records it: a part of a statement."""
    record, insert = usage_record_sql(run=run)
    recorded: list[UsageRecord] = []
    statement = Statement()
    statement.part("run_usage", insert)
    statement.returns("(SELECT id FROM run_usage)", lambda pk: recorded.append(usage_recorded(record, pk)))
    statement.execute()
    return recorded[0]


@pytest.fixture
def record(django_capture_on_commit_callbacks: Any) -> Any:
    """The usage recorded, committed: the counters move when the recording transaction commits."""

    def call(run: AgentRun) -> UsageRecord:
        with django_capture_on_commit_callbacks(execute=True):
            return usage_record(run)

    return call


def finished_run(tokens_in: int, tokens_out: int) -> AgentRun:
    agent = Agent.objects.create(name="Counted", slug="counted-run")
    return AgentRun.objects.create(
        agent=agent,
        spec={"slug": "counted-run"},
        trigger=AgentRun.Trigger.API,
        status=RunStatus.SUCCEEDED,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
    )


@pytest.mark.usefixtures("in_tenant_a")
def test_a_run_adds_its_tokens_to_the_counter_without_recounting_the_month(record: Any) -> None:
    # given: a counter that is not what the records add up to (recounting them would show)
    run = finished_run(tokens_in=7, tokens_out=3)
    counter = usage_counter_key()
    redis_client().set(counter, 1000)

    # when
    first = record(run)

    # then
    assert int(redis_client().get(counter)) == 1010

    # when: the same run is recorded again (its task delivered twice)
    again = record(run)

    # then: nothing more is counted or stored
    assert again.pk == first.pk and UsageRecord.objects.filter(run=run).count() == 1
    assert int(redis_client().get(counter)) == 1010


@pytest.mark.usefixtures("in_tenant_a")
def test_a_missing_counter_is_seeded_from_the_months_records(record: Any) -> None:
    # given
    record(finished_run(tokens_in=20, tokens_out=5))
    counter = usage_counter_key()
    redis_client().delete(counter)
    second = AgentRun.objects.create(
        agent=Agent.objects.get(slug="counted-run"), spec={}, trigger="api", status="succeeded", tokens_out=4
    )

    # when
    record(second)

    # then: every record of the month, this run's included
    totals = UsageRecord.objects.aggregate(tokens_in=Sum("tokens_in"), tokens_out=Sum("tokens_out"))
    assert int(redis_client().get(counter)) == totals["tokens_in"] + totals["tokens_out"]
    assert totals["tokens_out"] >= 9


@pytest.mark.usefixtures("in_tenant_a")
def test_a_run_is_recorded_in_one_statement_even_when_it_was_recorded_already(record: Any) -> None:
    """The run's close records its usage inside its transaction: one `INSERT`, no savepoint around it, and a
    second recording (its task delivered twice) does not break the transaction it runs in."""
    from django.db import connection, transaction
    from django.test.utils import CaptureQueriesContext

    run = finished_run(tokens_in=2, tokens_out=1)
    record(run)

    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        usage_record(run)  # recorded already: inserts nothing
        AgentRun.objects.filter(pk=run.pk).update(tokens_out=1)  # the transaction is still usable

    statements = [q["sql"].split()[0] for q in queries.captured_queries]
    assert statements[:2] == ["WITH", "SELECT"]  # the insert that found the run's record, and reading it
    assert not any("SAVEPOINT" in q["sql"] for q in queries.captured_queries)
    assert UsageRecord.objects.filter(run=run).count() == 1


@contextmanager
def budgeted(tenant: Tenant, budget: int, tokens_used: int, read: bool = True) -> Iterator[None]:
    """`tenant`'s schema, its monthly budget `budget` and `tokens_used` in its counter (removed afterwards); `read`:
    as this process has just read it."""
    limited = copy.copy(tenant)
    limited.monthly_token_budget = budget
    with tenant_context(limited):
        redis_client().set(usage_counter_key(), tokens_used)
        if read:
            assert usage_month_tokens() == tokens_used
        try:
            yield
        finally:
            redis_client().delete(usage_counter_key())


def test_a_quota_check_uses_the_count_read_within_the_window_then_reads_it_again(tenant_a: Tenant) -> None:
    """A new run's quota check reuses the month's count its process read within `USAGE_QUOTA_READ_VALID_S`: a
    budget used up is refused at most that long after (a run is counted only when it ends anyway)."""
    with override_settings(USAGE_QUOTA_READ_VALID_S=0.3), budgeted(tenant_a, budget=1000, tokens_used=999):
        usage_quota_check()  # under the budget: read from Redis
        redis_client().set(usage_counter_key(), 1000)  # a run ends elsewhere, using the rest of the month

        usage_quota_check()  # as read a moment ago: not refused yet
        time.sleep(0.35)
        with pytest.raises(QuotaExceeded):
            usage_quota_check()

    with override_settings(USAGE_QUOTA_READ_VALID_S=0), budgeted(tenant_a, budget=1000, tokens_used=999):
        usage_quota_check()
        redis_client().set(usage_counter_key(), 1000)
        with pytest.raises(QuotaExceeded):  # 0: read every time
            usage_quota_check()


def test_a_count_read_for_one_tenant_never_decides_anothers_check(tenant_a: Tenant, tenant_b: Tenant) -> None:
    # given: B over its budget, read; then A well under the same budget, read last
    with budgeted(tenant_b, budget=1000, tokens_used=5000), budgeted(tenant_a, budget=1000, tokens_used=10):
        # when / then: each is checked on its own count
        usage_quota_check()  # A
        with budgeted(tenant_b, budget=1000, tokens_used=5000, read=False), pytest.raises(QuotaExceeded):
            usage_quota_check()

    # and an API key of B with the same id as one of A's is checked on its own count too
    key = SimpleNamespace(pk=1, monthly_token_limit=100)
    with budgeted(tenant_b, budget=0, tokens_used=0):
        redis_client().set(usage_counter_key(key.pk), 500)
        assert usage_month_tokens(api_key_id=key.pk) == 500
        with budgeted(tenant_a, budget=0, tokens_used=0):
            redis_client().set(usage_counter_key(key.pk), 10)
            assert usage_month_tokens(api_key_id=key.pk) == 10
            usage_quota_check(api_key=key)
            redis_client().delete(usage_counter_key(key.pk))
        with pytest.raises(QuotaExceeded) as refused:
            usage_quota_check(api_key=key)
        redis_client().delete(usage_counter_key(key.pk))
    assert "This API key has used its 100 tokens" in refused.value.message
