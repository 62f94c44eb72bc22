"""The knowledge admin: creating knowledge bases (with field errors), uploading several files at once,
document actions, the retrieval-testing page, and refusals across tenants. The embedding provider is the
local OpenAI-compatible test server."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django_tenants.utils import tenant_context

from agents.tests.fixtures import make_provider
from conftest import PASSWORD, host_of, owner_email
from knowledge.models import Document, DocumentStatus, KnowledgeBase
from knowledge.services.bases import knowledge_base_create
from knowledge.services.ingestion import document_ingest
from knowledge.tests.fixtures import embedding_provider
from nexent_site.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db


def logged_in(client: Client, tenant: Any) -> Client:
    client.post(
        "/admin/login/", {"username": owner_email(tenant.schema_name), "password": PASSWORD}, HTTP_HOST=host_of(tenant)
    )
    return client


def kb_form(**overrides: Any) -> dict:
    """The admin's add form for a knowledge base, as a browser posts it."""
    return {
        "name": "Support",
        "slug": "support",
        "description": "",
        "chunk_strategy": "structure",
        "chunk_size": 300,
        "chunk_overlap": 30,
        "search_mode": "hybrid",
        "top_k": 5,
        "fusion": "rrf",
        "keyword_weight": 0.4,
        "score_threshold": 0,
        "documents-TOTAL_FORMS": 0,
        "documents-INITIAL_FORMS": 0,
        **overrides,
    }


def test_creating_a_knowledge_base_records_the_providers_dimension(
    client: Client, tenant_a: Any, fake_llm: FakeOpenAI
) -> None:
    host = {"HTTP_HOST": host_of(tenant_a)}
    with tenant_context(tenant_a):
        provider = embedding_provider(fake_llm)
    response = logged_in(client, tenant_a).post(
        "/admin/knowledge/knowledgebase/add/", kb_form(embedding_provider=provider.pk), **host
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    with tenant_context(tenant_a):
        kb = KnowledgeBase.objects.get(slug="support")
        assert kb.embedding_dimension == 384


def test_an_unreachable_embedding_provider_is_a_field_error(client: Client, tenant_a: Any) -> None:
    host = {"HTTP_HOST": host_of(tenant_a)}
    with tenant_context(tenant_a):
        from agents.models import ModelProvider
        from agents.services.providers import provider_save

        dead = provider_save(
            provider=ModelProvider(
                name="Dead", kind="embedding", base_url="http://127.0.0.1:9/v1", model_name="x", timeout_s=2
            ),
            api_key="",
        )
    response = logged_in(client, tenant_a).post(
        "/admin/knowledge/knowledgebase/add/", kb_form(embedding_provider=dead.pk, chunk_overlap=400), **host
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "could not be reached" in errors["embedding_provider"][0]
    assert "overlap" in errors["chunk_overlap"][0]


def test_uploading_several_files_queues_each_and_refuses_the_bad_ones(
    client: Client, tenant_a: Any, fake_llm: FakeOpenAI
) -> None:
    host = {"HTTP_HOST": host_of(tenant_a)}
    with tenant_context(tenant_a):
        kb = knowledge_base_create(name="Docs", slug="docs", embedding_provider=embedding_provider(fake_llm))
    files = [
        SimpleUploadedFile("a.md", b"# A\n\nAlpha text."),
        SimpleUploadedFile("b.txt", b"Bravo text."),
        SimpleUploadedFile("empty.txt", b""),
        SimpleUploadedFile("tool.exe", b"MZ\x90\x00" + b"\x00" * 200),
    ]
    response = logged_in(client, tenant_a).post(
        f"/admin/knowledge/knowledgebase/{kb.pk}/upload/", {"files": files}, follow=True, **host
    )
    page = response.content.decode()
    assert "Queued 2 document(s)" in page
    assert "empty.txt" in page and "tool.exe" in page
    with tenant_context(tenant_a):
        assert sorted(kb.documents.values_list("title", flat=True)) == ["a", "b"]
        assert set(kb.documents.values_list("status", flat=True)) == {DocumentStatus.QUEUED}


def test_document_actions_and_the_retrieval_page(client: Client, tenant_a: Any, fake_llm: FakeOpenAI) -> None:
    host = {"HTTP_HOST": host_of(tenant_a)}
    logged_in(client, tenant_a)
    with tenant_context(tenant_a):
        kb = knowledge_base_create(name="Docs", slug="docs", embedding_provider=embedding_provider(fake_llm))
    client.post(
        f"/admin/knowledge/knowledgebase/{kb.pk}/upload/",
        {"files": [SimpleUploadedFile("faq.md", b"# FAQ\n\nThe printer on floor two needs blue toner.")]},
        **host,
    )
    with tenant_context(tenant_a):
        document = kb.documents.get()
        document_ingest(document_id=document.pk)
    # the list shows status and a progress bar
    listing = client.get("/admin/knowledge/document/", **host).content.decode()
    assert f'data-document="{document.pk}"' in listing and "<progress" in listing and "Ready" in listing
    # retrieval testing: ranked chunks with keyword, vector and fused scores
    page = client.get(f"/admin/knowledge/knowledgebase/{kb.pk}/search/", {"query": "blue toner"}, **host)
    html = page.content.decode()
    assert page.status_code == 200 and "blue toner" in html and "relevance" in html and "keyword" in html
    assert page.context["result"].hits[0].document_id == document.pk
    # retry is refused for a ready document, with the reason; reindex queues it
    response = client.post(
        "/admin/knowledge/document/",
        {"action": "retry_selected", "_selected_action": [document.pk]},
        follow=True,
        **host,
    )
    assert "only failed or cancelled documents can be retried" in response.content.decode()
    client.post("/admin/knowledge/document/", {"action": "reindex_selected", "_selected_action": [document.pk]}, **host)
    with tenant_context(tenant_a):
        assert Document.objects.get(pk=document.pk).status == DocumentStatus.QUEUED
    client.post("/admin/knowledge/document/", {"action": "cancel_selected", "_selected_action": [document.pk]}, **host)
    with tenant_context(tenant_a):
        assert Document.objects.get(pk=document.pk).status == DocumentStatus.READY  # back to its live chunks
    client.post(
        "/admin/knowledge/document/",
        {"action": "delete_selected_documents", "_selected_action": [document.pk]},
        **host,
    )
    with tenant_context(tenant_a):
        assert not Document.objects.filter(pk=document.pk).exists()


def test_another_tenants_staff_reach_none_of_it(
    client: Client, tenant_a: Any, tenant_b: Any, fake_llm: FakeOpenAI
) -> None:
    from django.core.files.base import ContentFile

    from knowledge.services.documents import document_upload

    with tenant_context(tenant_a):
        kb = knowledge_base_create(name="Secret", slug="secret", embedding_provider=embedding_provider(fake_llm))
        make_provider(fake_llm, name="A chat")
        document = document_upload(knowledge_base=kb, upload=ContentFile(b"Secret plans.", name="plans.txt"))
    host_b = {"HTTP_HOST": host_of(tenant_b)}
    logged_in(client, tenant_b)
    for url in (
        f"/admin/knowledge/knowledgebase/{kb.pk}/change/",
        f"/admin/knowledge/knowledgebase/{kb.pk}/search/?query=x",
        f"/admin/knowledge/knowledgebase/{kb.pk}/upload/",
        f"/admin/knowledge/document/{document.pk}/change/",
        f"/sources/{document.pk}/",
    ):
        response = client.get(url, **host_b)
        assert response.status_code in (302, 404), url
        assert b"Secret" not in response.content and b"plans" not in response.content
    listing = client.get("/admin/knowledge/knowledgebase/", **host_b).content.decode()
    assert "Secret" not in listing
