"""Fixtures for knowledge tests. The one stand-in is the external embedding provider: `FakeOpenAI` speaks
the real OpenAI embeddings HTTP API with deterministic bag-of-words vectors."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.core.files.base import ContentFile

from agents.models import ModelProvider
from agents.tests.fixtures import make_provider
from conftest import Committed
from knowledge.models import IN_PROGRESS, Document, KnowledgeBase
from nexent_site.testing.fake_openai import FakeOpenAI


def embedding_provider(fake: FakeOpenAI, name: str = "Fake embeddings") -> ModelProvider:
    existing = ModelProvider.objects.filter(name=name).first()
    return existing or make_provider(fake, name=name, kind="embedding", model_name="fake-embed")


@pytest.fixture
def make_kb(committed: Committed, fake_llm: FakeOpenAI, tenant_a: Any) -> Callable[..., KnowledgeBase]:
    """Create (committed) a knowledge base on the fake embedding provider; deleted with its documents and
    files afterwards."""

    def build(*, tenant: Any = tenant_a, slug: str = "manual", **options: Any) -> KnowledgeBase:
        from knowledge.services.bases import knowledge_base_create, knowledge_base_delete

        def create() -> KnowledgeBase:
            return knowledge_base_create(
                name=slug.title(), slug=slug, embedding_provider=embedding_provider(fake_llm), **options
            )

        kb = committed.run(tenant, create)

        def remove() -> None:
            found = KnowledgeBase.objects.filter(pk=kb.pk).first()
            if found is not None:
                knowledge_base_delete(knowledge_base=found)
            ModelProvider.objects.filter(name="Fake embeddings", knowledge_bases__isnull=True).delete()

        committed.on_teardown(tenant, remove)
        return kb

    return build


def upload(committed: Committed, tenant: Any, kb: KnowledgeBase, name: str, data: bytes) -> Document:
    from knowledge.services.documents import document_upload

    return committed.run(tenant, lambda: document_upload(knowledge_base=kb, upload=ContentFile(data, name=name)))


def wait_for_documents(
    committed: Committed, tenant: Any, ids: list[int], *, timeout: float = 60, until: Callable | None = None
) -> list[Document]:
    """Poll until every document has left the in-progress states (or `until(documents)` is true)."""
    deadline = time.monotonic() + timeout
    while True:
        documents = committed.run(tenant, lambda: list(Document.objects.filter(pk__in=ids).order_by("pk")))
        done = until(documents) if until else all(d.status not in IN_PROGRESS for d in documents)
        if done:
            return documents
        if time.monotonic() > deadline:
            states = [(d.title, d.status, d.progress, d.error) for d in documents]
            raise AssertionError(f"documents still in progress after {timeout}s: {states}")
        time.sleep(0.1)
