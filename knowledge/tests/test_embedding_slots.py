"""A search's query embedding goes ahead of ingestion's batches on a busy embedding provider
(knowledge.services.embedding, agents.runtime.limits): real Redis; the embedding provider is the local
OpenAI-compatible test server (it stands in for an external model API)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.db import connection
from django_tenants.utils import tenant_context

from agents.models import ModelProvider
from agents.runtime.limits import ProviderSlot, provider_slots_key
from conftest import Committed
from knowledge.models import KnowledgeBase
from nexent_site.redis_pool import redis_client
from nexent_site.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db


def one_at_a_time(committed: Committed, tenant: Any, kb: KnowledgeBase) -> KnowledgeBase:
    """The knowledge base, its embedding provider allowed one request at once (loaded: no query in threads)."""

    def load() -> KnowledgeBase:
        ModelProvider.objects.filter(pk=kb.embedding_provider_id).update(max_concurrency=1)
        return KnowledgeBase.objects.select_related("embedding_provider").get(pk=kb.pk)

    return committed.run(tenant, load)


def batch_slot(tenant: Any, kb: KnowledgeBase, holder: str) -> ProviderSlot:
    """The slot an ingestion's batch takes (knowledge.services.embedding.embed_passages)."""
    key = provider_slots_key(tenant.schema_name, str(kb.embedding_provider_id))
    return ProviderSlot(redis_client(), key, 1, holder=holder, ttl_s=60, priority=ProviderSlot.LOW)


def query_in_thread(tenant: Any, kb: KnowledgeBase) -> tuple[threading.Thread, list]:
    from knowledge.services.embedding import embed_query

    result: list = []

    def search() -> None:
        try:
            with tenant_context(tenant):
                result.append(embed_query(kb, "how do I reset the pump"))
        finally:
            connection.close()

    thread = threading.Thread(target=search, daemon=True)
    thread.start()
    return thread, result


def wait_for(condition: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_waiting_search_gets_the_provider_before_the_next_batch_of_a_bulk_upload(
    committed: Committed, make_kb: Any, tenant_a: Any, fake_llm: FakeOpenAI
) -> None:
    kb = one_at_a_time(committed, tenant_a, make_kb(tenant=tenant_a))
    waiting_key = provider_slots_key(tenant_a.schema_name, str(kb.embedding_provider_id)) + ":waiting"

    # given: a document's batch holds the provider's one slot
    first_batch = batch_slot(tenant_a, kb, "document-1-batch-1")
    assert first_batch.try_acquire()

    # when: a search needs the provider meanwhile, it waits and says so
    thread, result = query_in_thread(tenant_a, kb)
    wait_for(lambda: redis_client().exists(waiting_key))
    assert result == []

    # and: the batch ends; the document's next batch does not take the slot back while the search waits
    first_batch.release()
    next_batch = batch_slot(tenant_a, kb, "document-1-batch-2")
    assert not next_batch.try_acquire()

    # then: the search has its embedding, and the next batch goes on once the search is done
    thread.join(timeout=10)
    assert len(result) == 1 and len(result[0]) == kb.embedding_dimension
    assert next_batch.acquire(check=lambda: None, poll_s=0.02) < 5
    next_batch.release()


def test_batches_give_way_only_to_searches_of_their_own_tenant(
    committed: Committed, make_kb: Any, tenant_a: Any, tenant_b: Any, fake_llm: FakeOpenAI
) -> None:
    kb_a = one_at_a_time(committed, tenant_a, make_kb(tenant=tenant_a))
    kb_b = one_at_a_time(committed, tenant_b, make_kb(tenant=tenant_b))

    # given: B's provider is busy and a search of B's waits for it
    b_batch = batch_slot(tenant_b, kb_b, "b-document-batch")
    assert b_batch.try_acquire()
    thread, result = query_in_thread(tenant_b, kb_b)
    b_waiting = provider_slots_key(tenant_b.schema_name, str(kb_b.embedding_provider_id)) + ":waiting"
    wait_for(lambda: redis_client().exists(b_waiting))

    # then: A's batches are not held back by it
    a_batch = batch_slot(tenant_a, kb_a, "a-document-batch")
    assert a_batch.try_acquire()
    a_batch.release()

    b_batch.release()
    thread.join(timeout=10)
    assert len(result) == 1
