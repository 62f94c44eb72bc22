"""Model providers: connectivity tests against the local OpenAI-compatible test server (the stand-in
for external providers), key encryption and masking, and cross-tenant refusal."""

import pytest
from django.db import connection
from django.test import Client
from django_tenants.utils import tenant_context

from agents.models import Agent, ModelProvider
from agents.services.providers import provider_save, provider_test
from agents.tests.fixtures import make_provider
from conftest import PASSWORD, host_of, owner_email
from nexent_site.integrations.openai_compat import ProviderConfig, ProviderError, embed
from nexent_site.testing.fake_openai import FakeOpenAI, Reply
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def test_a_working_chat_provider_is_marked_available(tenant_a: Tenant, fake_llm: FakeOpenAI) -> None:
    with tenant_context(tenant_a):
        provider = provider_test(provider=make_provider(fake_llm))
        assert (provider.status, provider.status_error) == ("available", "")
        assert provider.status_checked_at is not None
    assert fake_llm.chat_requests()[0]["model"] == "fake-model"


def test_an_embedding_provider_records_its_dimension(tenant_a: Tenant, fake_llm: FakeOpenAI) -> None:
    fake_llm.dimension = 256
    with tenant_context(tenant_a):
        provider = provider_test(provider=make_provider(fake_llm, name="Fake embed", kind="embedding"))
        assert (provider.status, provider.dimension) == ("available", 256)


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda fake: setattr(fake, "api_key", "the-right-key"), "authentication failed (401): Incorrect API key"),
        (lambda fake: fake.script(Reply(status=503, error_message="overloaded")), "HTTP 503 from provider: overloaded"),
        (lambda fake: fake.script(Reply(delay_s=2.5)), "timed out after 1s"),
        (lambda fake: fake.script(Reply(malformed=True)), "malformed response"),
    ],
)
def test_a_failing_provider_is_marked_unavailable_with_the_reason(
    tenant_a: Tenant, fake_llm: FakeOpenAI, setup: object, reason: str
) -> None:
    setup(fake_llm)  # type: ignore[operator]
    with tenant_context(tenant_a):
        provider = provider_test(provider=make_provider(fake_llm, timeout_s=1))
        assert provider.status == "unavailable"
        assert reason in provider.status_error
        assert "sk-test" not in provider.status_error


def test_an_unreachable_provider_is_unavailable(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        provider = provider_save(
            provider=ModelProvider(name="Nowhere", base_url="http://127.0.0.1:9/v1", model_name="m"), api_key=""
        )
        provider_test(provider=provider)
        assert provider.status == "unavailable" and "cannot connect" in provider.status_error


def test_an_embedding_of_the_wrong_dimension_is_refused(fake_llm: FakeOpenAI) -> None:
    fake_llm.dimension = 128
    config = ProviderConfig(kind="embedding", base_url=fake_llm.base_url, model="e", dimension=384)
    with pytest.raises(ProviderError) as excinfo:
        embed(config, ["hello"])
    assert excinfo.value.code == "dimension_mismatch"
    assert "128 dimensions, expected 384" in excinfo.value.message


def test_api_keys_are_encrypted_at_rest_and_masked(tenant_a: Tenant, fake_llm: FakeOpenAI) -> None:
    with tenant_context(tenant_a):
        provider = make_provider(fake_llm, api_key="sk-secret-value-9876")
        with connection.cursor() as cursor:
            cursor.execute("SELECT api_key FROM agents_modelprovider WHERE id = %s", [provider.pk])
            (stored,) = cursor.fetchone()
        assert "sk-secret-value-9876" not in stored and stored.startswith("gAAAA")  # a Fernet token
        assert ModelProvider.objects.get(pk=provider.pk).api_key == "sk-secret-value-9876"
        assert provider.masked_key == "…9876"


def test_the_admin_never_shows_the_key(client: Client, tenant_a: Tenant, fake_llm: FakeOpenAI) -> None:
    with tenant_context(tenant_a):
        provider = make_provider(fake_llm, api_key="sk-secret-value-9876")
    client.post("/admin/login/", {"username": owner_email("alpha"), "password": PASSWORD}, HTTP_HOST=host_of(tenant_a))
    for url in ("/admin/agents/modelprovider/", f"/admin/agents/modelprovider/{provider.pk}/change/"):
        page = client.get(url, HTTP_HOST=host_of(tenant_a)).content.decode()
        assert "sk-secret-value-9876" not in page and "…9876" in page


def test_adding_a_provider_in_the_admin_tests_it_first(client: Client, tenant_a: Tenant, fake_llm: FakeOpenAI) -> None:
    client.post("/admin/login/", {"username": owner_email("alpha"), "password": PASSWORD}, HTTP_HOST=host_of(tenant_a))
    data = {
        "name": "Via admin",
        "kind": "chat",
        "base_url": fake_llm.base_url,
        "model_name": "fake-model",
        "timeout_s": "5",
        "max_concurrency": "2",
        "context_window": "4096",
        "extra_headers": "{}",
        "tool_choice": "required",
        "new_api_key": "sk-typed-in-admin-1111",
    }

    fake_llm.api_key = "something-else"
    refused = client.post("/admin/agents/modelprovider/add/", data, HTTP_HOST=host_of(tenant_a))
    assert refused.status_code == 200
    assert "Connectivity test failed: authentication failed (401)" in refused.content.decode()

    fake_llm.api_key = "sk-typed-in-admin-1111"
    saved = client.post("/admin/agents/modelprovider/add/", data, HTTP_HOST=host_of(tenant_a))
    assert saved.status_code == 302
    with tenant_context(tenant_a):
        provider = ModelProvider.objects.get(name="Via admin")
        assert (provider.status, provider.api_key, provider.api_key_hint) == (
            "available",
            "sk-typed-in-admin-1111",
            "1111",
        )


def test_every_tenant_gets_default_providers_of_its_own(tenant_a: Tenant, tenant_b: Tenant) -> None:
    with tenant_context(tenant_a):
        a_ids = set(ModelProvider.objects.filter(is_default=True).values_list("kind", flat=True))
    assert a_ids == {"chat", "embedding"}


def test_tenant_a_cannot_attach_a_provider_of_tenant_b(
    client: Client, tenant_a: Tenant, tenant_b: Tenant, fake_llm: FakeOpenAI
) -> None:
    with tenant_context(tenant_b):
        b_provider = make_provider(fake_llm, name="B only")
    with tenant_context(tenant_a):
        assert not ModelProvider.objects.filter(name="B only").exists()
    client.post("/admin/login/", {"username": owner_email("alpha"), "password": PASSWORD}, HTTP_HOST=host_of(tenant_a))
    response = client.post(
        "/admin/agents/agent/add/",
        {
            "name": "Sneaky",
            "slug": "sneaky",
            "mode": "chat",
            "chat_provider": str(b_provider.pk),
            "temperature": "0.3",
            "max_steps": "4",
            "run_timeout_s": "60",
            "example_questions": "[]",
            "tools-TOTAL_FORMS": "0",
            "tools-INITIAL_FORMS": "0",
            "sub_agent_links-TOTAL_FORMS": "0",
            "sub_agent_links-INITIAL_FORMS": "0",
            "versions-TOTAL_FORMS": "0",
            "versions-INITIAL_FORMS": "0",
        },
        HTTP_HOST=host_of(tenant_a),
    )
    with tenant_context(tenant_a):
        same_pk_in_a = ModelProvider.objects.filter(pk=b_provider.pk, kind="chat").first()
        created = Agent.objects.filter(slug="sneaky").first()
    if same_pk_in_a is None:
        # the id means nothing in A's schema: a field error, nothing created
        assert "chat_provider" in response.context["adminform"].form.errors
        assert created is None
    else:
        # the same number names one of A's own providers, never B's
        assert created.chat_provider.name == same_pk_in_a.name != "B only"


def test_a_rerank_provider_is_tested_with_a_real_rerank_call(tenant_a: Tenant, fake_llm: FakeOpenAI) -> None:
    with tenant_context(tenant_a):
        provider = provider_test(provider=make_provider(fake_llm, name="Fake rerank", kind="rerank"))
        assert provider.status == "available", provider.status_error
    assert any(r["path"].endswith("/rerank") for r in fake_llm.requests)
