"""Rate limits and quotas, enforced in Redis across processes: two real web server processes (uvicorn) serve
the API, and runs go through a real Celery worker. Only the model provider is faked (the local
OpenAI-compatible server)."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from django.db import connection

from agents.models import UsageRecord
from agents.runtime.streams import redis_client
from agents.services.runs import run_start
from agents.services.usage import QuotaExceeded, usage_counter_key, usage_month_tokens
from conftest import Committed, asgi_process, host_of
from nexent_site.testing.fake_openai import Reply
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def _fresh_window(needed_s: float = 25) -> None:
    """Start at the beginning of a one-minute window when too little of the current one is left."""
    left = 60 - time.time() % 60
    if left < needed_s:
        time.sleep(left + 0.2)


def _hammer(ports: list[int], tenant: Tenant, keys: list[str], count: int) -> list[requests.Response]:
    def one(index: int) -> requests.Response:
        return requests.get(
            f"http://127.0.0.1:{ports[index % len(ports)]}/api/v1/me/",
            headers={"Host": host_of(tenant), "Authorization": f"Bearer {keys[index % len(keys)]}"},
            timeout=30,
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(count)))


def test_limits_per_key_and_per_tenant_hold_across_two_web_processes(
    celery_worker: dict, committed: Committed, committed_key: Any, tenant_a: Tenant
) -> None:
    # given: two web processes, a key limited to 10 requests a minute, and two unlimited keys
    limited = committed_key(tenant_a, scopes="chat", requests_per_minute=10)
    free_one, free_two = committed_key(tenant_a, scopes="chat"), committed_key(tenant_a, scopes="chat")
    with asgi_process(celery_worker["queue"]) as one, asgi_process(celery_worker["queue"]) as two:
        ports = [one["port"], two["port"]]
        _fresh_window()

        # when: 30 requests with the limited key, spread over both processes
        responses = _hammer(ports, tenant_a, [limited], 30)

        # then: exactly 10 pass; the others get 429 in the error format, with Retry-After
        assert Counter(r.status_code for r in responses) == {200: 10, 429: 20}, one["log"].read_text()[-3000:]
        refused = next(r for r in responses if r.status_code == 429)
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert refused.json()["error"]["code"] == "rate_limited"

        # and the organisation's limit counts every key together
        def set_tenant_limit(value: int) -> None:  # as the platform admin does: saved, so every process sees it
            tenant = Tenant.objects.get(pk=tenant_a.pk)
            tenant.api_requests_per_minute = value
            tenant.save(update_fields=["api_requests_per_minute"])

        committed.run(Tenant.objects.get(schema_name="public"), lambda: set_tenant_limit(12))
        committed.on_teardown(Tenant.objects.get(schema_name="public"), lambda: set_tenant_limit(0))
        _fresh_window()
        responses = _hammer(ports, tenant_a, [free_one, free_two], 30)
        assert Counter(r.status_code for r in responses) == {200: 12, 429: 18}


def test_the_monthly_token_budget_refuses_new_runs_with_429(
    committed: Committed, fake_llm: Any, published_agent: Any, tenant_a: Tenant
) -> None:
    # given: an organisation whose usage this month (earlier runs included) is 200 tokens over its budget
    agent = published_agent(slug="budgeted", mode="chat")
    public = Tenant.objects.get(schema_name="public")

    def used_so_far() -> int:
        redis_client().delete(usage_counter_key())  # counted again from the records, as after a Redis restart
        return usage_month_tokens()

    budget = committed.run(tenant_a, used_so_far) + 1_000

    def set_budget(value: int) -> None:
        tenant = Tenant.objects.get(pk=tenant_a.pk)
        tenant.monthly_token_budget = value
        tenant.save(update_fields=["monthly_token_budget"])

    committed.run(public, lambda: set_budget(budget))
    committed.on_teardown(public, lambda: set_budget(5_000_000))
    used = {"agent_slug": "budgeted", "trigger": "api", "tokens_in": 700, "tokens_out": 500}
    record = committed.run(tenant_a, lambda: UsageRecord.objects.create(**used))
    committed.on_teardown(tenant_a, lambda: UsageRecord.objects.filter(pk=record.pk).delete())

    def start() -> Any:
        connection.set_tenant(Tenant.objects.get(pk=tenant_a.pk))  # the limits as they are now
        assert used_so_far() == budget + 200
        return run_start(agent=agent, messages="hi", trigger="api")

    # when / then
    with pytest.raises(QuotaExceeded) as excinfo:
        committed.run(tenant_a, start)
    assert excinfo.value.status == 429 and excinfo.value.retry_after > 0
    assert f"{budget:,} tokens" in excinfo.value.message


def test_a_key_whose_month_is_used_up_through_one_web_process_is_refused_by_the_other(
    celery_worker: dict, committed: Committed, committed_key: Any, fake_llm: Any, published_agent: Any, tenant_a: Tenant
) -> None:
    # given: a key allowed 5 tokens a month, and two web processes
    published_agent(slug="metered", mode="chat")
    fake_llm.script(Reply(content="An answer of more than five tokens, surely."))
    raw = committed_key(tenant_a, scopes="chat", monthly_token_limit=5)
    committed.on_teardown(tenant_a, lambda: UsageRecord.objects.filter(agent_slug="metered").delete())
    body = {"model": "metered", "messages": [{"role": "user", "content": "hello"}]}
    headers = {"Host": host_of(tenant_a), "Authorization": f"Bearer {raw}"}
    with asgi_process(celery_worker["queue"]) as one, asgi_process(celery_worker["queue"]) as two:
        # when: the first answer, through one process, uses the month's tokens
        first = requests.post(
            f"http://127.0.0.1:{one['port']}/v1/chat/completions", json=body, headers=headers, timeout=60
        )
        assert first.status_code == 200, first.text
        assert first.json()["usage"]["total_tokens"] > 5
        # then: the other process refuses the next one
        second = requests.post(
            f"http://127.0.0.1:{two['port']}/v1/chat/completions", json=body, headers=headers, timeout=60
        )
    assert second.status_code == 429
    assert second.json()["error"]["type"] == "insufficient_quota"
    assert int(second.headers["Retry-After"]) > 0


def test_a_tenant_re_created_under_the_same_slug_does_not_inherit_the_request_counts(tenant_a: Tenant) -> None:
    """Counters are keyed by the tenant's creation time as well as its schema (its key ids start again from 1)."""
    import copy
    from datetime import timedelta

    from django_tenants.utils import tenant_context

    from api.throttling import rate_limit_hit

    moment = 1_000_000_000.0 + time.time() % 1000  # a window of its own, far from the other tests' windows
    with tenant_context(tenant_a):
        # given: the tenant used up its limit in this window
        tenant = Tenant.objects.get(pk=tenant_a.pk)
        tenant.api_requests_per_minute = 2
        assert [rate_limit_hit(tenant, None, moment) is None for _ in range(3)] == [True, True, False]

        # when: a tenant of the same schema, created later, asks in the same window
        recreated = copy.copy(tenant)
        recreated.created_at = tenant.created_at + timedelta(days=1)

        # then: it starts from nothing
        assert rate_limit_hit(recreated, None, moment) is None
