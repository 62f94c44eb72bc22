"""Usage: every finished run records its tokens by agent, user and API key; the month's counters follow; the
admin shows it with charts. Runs go through a real Celery worker; only the model provider is faked."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django_tenants.utils import tenant_context

from accounts.services import user_create
from agents.models import Agent, AgentRun, UsageRecord
from agents.runtime.streams import run_events_follow
from agents.services.runs import run_start
from agents.services.usage import usage_month_tokens
from api.models import ApiKey
from api.tests.fixtures import api_client, key_for
from conftest import PASSWORD, Committed, host_of, owner_email
from nexent_site.testing.fake_openai import FakeOpenAI, Reply
from tenants.models import Tenant

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_worker")]


def test_a_finished_run_records_its_tokens_by_agent_user_and_key(
    committed: Committed, committed_key: Any, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    # given
    published_agent(slug="counted", mode="chat")
    raw = committed_key(tenant_a, scopes="chat", name="billing test")
    key = committed.run(tenant_a, lambda: ApiKey.objects.get(prefix=raw[:12]))
    before = committed.run(tenant_a, lambda: (usage_month_tokens(), usage_month_tokens(api_key_id=key.pk)))
    fake_llm.script(Reply(content="Counted answer."))

    # when
    run = committed.run(
        tenant_a,
        lambda: run_start(
            agent=Agent.objects.get(slug="counted"),
            messages="count me",
            trigger=AgentRun.Trigger.API,
            user_email=owner_email("alpha"),
            api_key=key,
        ),
    )
    events = list(run_events_follow(tenant_a.schema_name, str(run.id), timeout_s=60))
    committed.on_teardown(tenant_a, lambda: UsageRecord.objects.filter(run_id=run.pk).delete())

    # then
    assert events[-1]["data"]["status"] == "succeeded"
    record = committed.run(tenant_a, lambda: UsageRecord.objects.get(run_id=run.pk))
    assert (record.agent_slug, record.user_email, record.api_key_id) == ("counted", owner_email("alpha"), key.pk)
    finished = committed.run(tenant_a, lambda: AgentRun.objects.get(pk=run.pk))
    assert (record.tokens_in, record.tokens_out) == (finished.tokens_in, finished.tokens_out)
    assert record.tokens_in > 0 and record.tokens_out == 2  # as the model reported them
    after = committed.run(tenant_a, lambda: (usage_month_tokens(), usage_month_tokens(api_key_id=key.pk)))
    assert after == (before[0] + record.tokens, before[1] + record.tokens)

    # and the admin's usage page charts it, with the month's consumption per key
    client = Client()
    client.post("/admin/login/", {"username": owner_email("alpha"), "password": PASSWORD}, HTTP_HOST=host_of(tenant_a))
    page = client.get("/admin/agents/usagerecord/", HTTP_HOST=host_of(tenant_a)).content.decode()
    assert "Tokens per day" in page and "Tokens per agent" in page
    assert "counted" in page and "billing test" in page

    # and the API's usage endpoint reports it per key
    _, admin_key = key_for(tenant_a, scopes="admin")
    rows = api_client(tenant_a, admin_key).get("/api/v1/usage/?group_by=key").json()["results"]
    assert any(row["key"] == "billing test" and row["tokens"] == record.tokens for row in rows)


def test_usage_is_the_callers_own_without_the_admin_scope(tenant_a: Tenant) -> None:
    # given: usage by the owner and by a member
    with tenant_context(tenant_a):
        user_create(email="member@alpha.test", password=PASSWORD)
        UsageRecord.objects.create(agent_slug="x", user_email="owner@alpha.test", trigger="api", tokens_in=5)
        UsageRecord.objects.create(agent_slug="x", user_email="member@alpha.test", trigger="api", tokens_in=7)
    _, member_key = key_for(tenant_a, scopes="chat", email="member@alpha.test")
    _, owner_admin_key = key_for(tenant_a, scopes="admin")

    # when
    mine = api_client(tenant_a, member_key).get("/api/v1/usage/?group_by=user").json()["results"]
    everyone = api_client(tenant_a, owner_admin_key).get("/api/v1/usage/?group_by=user").json()["results"]

    # then
    assert [row["user"] for row in mine] == ["member@alpha.test"]
    assert {"owner@alpha.test", "member@alpha.test"} <= {row["user"] for row in everyone}


def test_usage_of_tenant_b_is_never_reported_on_tenant_a(tenant_a: Tenant, tenant_b: Tenant) -> None:
    with tenant_context(tenant_b):
        UsageRecord.objects.create(agent_slug="b-secret-agent", trigger="api", tokens_in=99)
    _, raw = key_for(tenant_a, scopes="admin")
    rows = api_client(tenant_a, raw).get("/api/v1/usage/?group_by=agent").json()["results"]
    assert "b-secret-agent" not in {row["agent"] for row in rows}


def test_bad_usage_parameters_are_named(tenant_a: Tenant) -> None:
    _, raw = key_for(tenant_a, scopes="chat")
    response = api_client(tenant_a, raw).get("/api/v1/usage/?group_by=planet&since=yesterday")
    assert response.status_code == 400
    assert set(response.json()["error"]["fields"]) == {"group_by", "since"}


def test_usage_says_how_much_of_it_is_estimated(tenant_a: Tenant, tenant_b: Tenant) -> None:
    """Runs on a provider that reports no usage (llama.cpp's server) are counted from an estimate: the API and the
    admin's usage page say how many of the tokens are, of the tenant's own records only."""
    with tenant_context(tenant_b):
        UsageRecord.objects.create(
            agent_slug="usage-local", trigger="chat", tokens_in=900, tokens_out=99, estimated=True
        )
    with tenant_context(tenant_a):
        UsageRecord.objects.create(
            agent_slug="usage-local", trigger="chat", tokens_in=300, tokens_out=100, estimated=True
        )
        UsageRecord.objects.create(agent_slug="usage-local", trigger="chat", tokens_in=20, tokens_out=5)
        UsageRecord.objects.create(agent_slug="usage-remote", trigger="chat", tokens_in=7, tokens_out=3)
    _, raw = key_for(tenant_a, scopes="admin")

    rows = api_client(tenant_a, raw).get("/api/v1/usage/?group_by=agent").json()["results"]

    by_agent = {row["agent"]: (row["tokens"], row["estimated_tokens"]) for row in rows}
    assert by_agent["usage-local"] == (425, 400) and by_agent["usage-remote"] == (10, 0)
    client = Client()
    client.post("/admin/login/", {"username": owner_email("alpha"), "password": PASSWORD}, HTTP_HOST=host_of(tenant_a))
    page = client.get("/admin/agents/usagerecord/", HTTP_HOST=host_of(tenant_a)).content.decode()
    assert "(≈ 400 estimated)" in page
    estimated_only = client.get("/admin/agents/usagerecord/?estimated__exact=1", HTTP_HOST=host_of(tenant_a))
    listed = [r.agent_slug for r in estimated_only.context["cl"].result_list]
    assert listed.count("usage-local") == 1 and "usage-remote" not in listed
