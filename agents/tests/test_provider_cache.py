"""A run's chat providers come from a per-process cache (no query before the model call), kept per tenant and
dropped by every process when a provider of that tenant changes. The model is the local OpenAI-compatible test
server (the stand-in for an external provider); the worker is a real Celery worker."""

import uuid
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import tenant_context

from agents.models import AgentRun, ModelProvider
from agents.runtime.streams import run_events_follow
from agents.services.providers import chat_provider_configs, provider_save, providers_changed, providers_token_key
from agents.services.runs import run_start
from agents.tests.fixtures import make_provider
from conftest import Committed
from nexent_site.redis_pool import redis_client
from nexent_site.tenancy import TenantTask
from nexent_site.testing.fake_openai import FakeOpenAI
from nexent_site.token_cache import tokens_prefetched_forget
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def test_each_tenant_gets_its_own_providers_even_under_the_same_id(
    tenant_a: Tenant, tenant_b: Tenant, fake_llm: FakeOpenAI, django_assert_num_queries: Any
) -> None:
    with tenant_context(tenant_a):
        mine = make_provider(fake_llm, name="A's model", base_url="http://a.invalid/v1")
    with tenant_context(tenant_b):  # B's row has A's id: only the tenant tells the two apart
        make_provider(fake_llm, name="B's model", base_url="http://b.invalid/v1", id=mine.pk)

    with tenant_context(tenant_a):
        assert chat_provider_configs({mine.pk})[str(mine.pk)].base_url == "http://a.invalid/v1"
    with tenant_context(tenant_b):
        assert chat_provider_configs({mine.pk})[str(mine.pk)].base_url == "http://b.invalid/v1"
    with tenant_context(tenant_a), django_assert_num_queries(0):  # cached, and still A's
        assert chat_provider_configs({mine.pk})[str(mine.pk)].base_url == "http://a.invalid/v1"


def test_a_changed_provider_is_read_again(tenant_a: Tenant, fake_llm: FakeOpenAI) -> None:
    with tenant_context(tenant_a):
        provider = make_provider(fake_llm, name="Changing", base_url="http://before.invalid/v1")
        assert chat_provider_configs({provider.pk})[str(provider.pk)].base_url == "http://before.invalid/v1"

        provider.base_url = "http://after.invalid/v1"
        provider_save(provider=provider)  # as the admin and the API save it
        assert chat_provider_configs({provider.pk})[str(provider.pk)].base_url == "http://after.invalid/v1"

        ModelProvider.objects.filter(pk=provider.pk).delete()
        assert str(provider.pk) not in chat_provider_configs({provider.pk})


def test_a_change_made_without_the_model_is_seen_once_announced(tenant_a: Tenant, fake_llm: FakeOpenAI) -> None:
    with tenant_context(tenant_a):
        provider = make_provider(fake_llm, name="Raw", base_url="http://before.invalid/v1")
        chat_provider_configs({provider.pk})
        ModelProvider.objects.filter(pk=provider.pk).update(base_url="http://after.invalid/v1")  # no signal
        assert chat_provider_configs({provider.pk})[str(provider.pk)].base_url == "http://before.invalid/v1"
        providers_changed()
        assert chat_provider_configs({provider.pk})[str(provider.pk)].base_url == "http://after.invalid/v1"


@pytest.mark.usefixtures("celery_worker")
def test_a_worker_uses_a_rotated_key_at_its_next_run(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    published_agent(mode="chat")
    fake_llm.api_key = "sk-test-1234567890abcd"  # the key the published agent's provider was saved with

    def run_once() -> dict:
        from agents.models import Agent

        run = committed.run(
            tenant_a, lambda: run_start(agent=Agent.objects.get(slug="helper"), messages="hello", trigger="api")
        )
        events = list(run_events_follow(tenant_a.schema_name, str(run.id), timeout_s=60))
        assert committed.run(tenant_a, lambda: AgentRun.objects.get(pk=run.pk).status) == events[-1]["data"]["status"]
        return events[-1]["data"]

    assert run_once()["status"] == "succeeded"  # the worker has the provider cached now

    fake_llm.api_key = "sk-rotated-0987654321zyxw"
    committed.run(
        tenant_a,
        lambda: provider_save(
            provider=ModelProvider.objects.get(name="Fake chat"), api_key="sk-rotated-0987654321zyxw"
        ),
    )
    assert run_once()["status"] == "succeeded"  # with the old key it would fail: 401 from the provider

    fake_llm.api_key = "sk-not-the-stored-one-123456"
    finished = run_once()
    assert finished["status"] == "failed" and "authentication failed" in finished["error"]


def _token_replaced(token_key: str) -> None:
    """Another process's change, as this process's cache would learn of it: a new token in Redis, nothing else."""
    redis_client().set(token_key, uuid.uuid4().hex)


def _lookup_reads(tenant: Tenant, provider_id: int) -> bool:
    """Whether looking the provider up in `tenant` read the database (its cached entry no longer held)."""
    with tenant_context(tenant), CaptureQueriesContext(connection) as queries:
        chat_provider_configs({provider_id})
    return len(queries) > 0


def test_a_task_start_reads_its_providers_token_with_its_tenants_in_one_round_trip(
    tenant_a: Tenant, tenant_b: Tenant, fake_llm: FakeOpenAI
) -> None:
    """TenantTask.get_tenant_for_schema reads the tenants' token and the tenant's providers' token together
    (nexent_site.token_cache.tokens_prefetch). The run's provider lookup in the same thread then uses the token read
    at the task's start, once, instead of a GET of its own: a change announced in between is seen by the lookup
    after it. Another tenant's lookup is not served by A's prefetched token."""
    with tenant_context(tenant_a):
        mine = make_provider(fake_llm, name="A's model")
        a_key = providers_token_key()
    with tenant_context(tenant_b):
        theirs = make_provider(fake_llm, name="B's model")
        b_key = providers_token_key()
    assert _lookup_reads(tenant_a, mine.pk) and _lookup_reads(tenant_b, theirs.pk)  # both cached now
    TenantTask.get_tenant_for_schema(tenant_a.schema_name)  # the tenant is cached from the tenants' fixtures

    try:
        assert TenantTask.get_tenant_for_schema(tenant_a.schema_name).schema_name == tenant_a.schema_name
        _token_replaced(a_key)  # after the task's start read A's token
        _token_replaced(b_key)
        assert _lookup_reads(tenant_b, theirs.pk)  # B's own token, read now: reloaded
        assert not _lookup_reads(tenant_a, mine.pk)  # the token read at the task's start: still cached
        assert _lookup_reads(tenant_a, mine.pk)  # used once: the change is seen now

        TenantTask.get_tenant_for_schema(tenant_a.schema_name)
        tokens_prefetched_forget()  # the task ended without looking its providers up
        _token_replaced(a_key)
        assert _lookup_reads(tenant_a, mine.pk)  # not kept for the thread's next task
    finally:
        tokens_prefetched_forget()
