"""Each tenant gets its turn at the ingestion workers (knowledge.services.documents): real PostgreSQL, Redis
and Celery. The embedding provider is the local OpenAI-compatible test server (it stands in for an external
model API)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.files.base import ContentFile
from django.utils import timezone

from agents.models import ModelProvider
from conftest import Committed, worker_process
from knowledge.models import Document, DocumentStatus, KnowledgeBase
from knowledge.tests.fixtures import wait_for_documents
from nexent_site.redis_pool import redis_client
from nexent_site.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db


def queued_tasks(queue: str) -> list[int]:
    """The document ids of the ingestion tasks waiting in `queue`'s background queue, oldest first."""
    import base64
    import json

    from nexent_site.task_routes import background_queue_for

    raw = redis_client().lrange(background_queue_for(queue), 0, -1)
    return [json.loads(base64.b64decode(json.loads(m)["body"]))[0][0] for m in reversed(raw)]


def upload_many(committed: Committed, tenant: Any, kb: KnowledgeBase, count: int, prefix: str) -> list[int]:
    from knowledge.services.documents import documents_upload

    files = [
        ContentFile(f"{prefix} document {i}: the procedure.".encode(), name=f"{prefix}-{i}.txt") for i in range(count)
    ]
    documents = committed.run(tenant, lambda: documents_upload(knowledge_base=kb, uploads=files))
    return [d.pk for d in documents]


def test_a_bulk_upload_hands_the_workers_only_its_tenants_share_and_another_tenant_goes_next(
    committed: Committed, make_kb: Any, tenant_a: Any, tenant_b: Any, own_queue: str, settings: Any
) -> None:
    """No worker consumes this test's queue: what waits where is read from PostgreSQL and from the broker."""
    from knowledge.services.documents import documents_dispatch
    from knowledge.services.ingestion import documents_watchdog

    settings.KNOWLEDGE_TENANT_CONCURRENCY = 2
    kb_a, kb_b = make_kb(tenant=tenant_a), make_kb(tenant=tenant_b)

    # when: tenant A uploads five files at once
    a_ids = upload_many(committed, tenant_a, kb_a, 5, "alpha")

    # then: two go to the workers, three wait in the database
    assert queued_tasks(own_queue) == a_ids[:2]
    with_workers = committed.run(
        tenant_a, lambda: set(Document.objects.filter(heartbeat_at__isnull=False).values_list("pk", flat=True))
    )
    assert with_workers == set(a_ids[:2])

    # when: tenant B uploads one: it goes to the workers at once, behind two of A's, not five
    (b_id,) = upload_many(committed, tenant_b, kb_b, 1, "beta")
    assert queued_tasks(own_queue) == [*a_ids[:2], b_id]

    # and: B's dispatching never hands out A's documents
    assert committed.run(tenant_b, documents_dispatch) == []

    # when: one of A's ingestions ends, A's next document takes its place
    committed.run(tenant_a, lambda: Document.objects.filter(pk=a_ids[0]).update(status=DocumentStatus.READY))
    assert committed.run(tenant_a, documents_dispatch) == [a_ids[2]]
    assert committed.run(tenant_a, documents_dispatch) == []  # no place left
    assert queued_tasks(own_queue) == [*a_ids[:2], b_id, a_ids[2]]

    # and: documents waiting for their turn, however long, are not taken for stalled ones
    committed.run(
        tenant_a,
        lambda: Document.objects.filter(pk__in=a_ids[3:]).update(updated_at=timezone.now() - timedelta(hours=1)),
    )
    assert committed.run(tenant_a, documents_watchdog) == {"requeued": 0, "failed": 0, "dispatched": 0}
    waiting = committed.run(tenant_a, lambda: list(Document.objects.filter(pk__in=a_ids[3:])))
    assert [(d.status, d.attempts, d.heartbeat_at) for d in waiting] == [(DocumentStatus.QUEUED, 1, None)] * 2


def test_documents_are_handed_out_no_faster_than_their_embedding_provider_takes_them(
    committed: Committed,
    make_kb: Any,
    tenant_a: Any,
    tenant_b: Any,
    fake_llm: FakeOpenAI,
    own_queue: str,
    settings: Any,
) -> None:
    """No worker consumes this test's queue. A one-at-a-time embedding provider gets one document at a time (the
    others would hold worker threads only to wait for its slot); the tenant's other provider is not held up."""
    from knowledge.services.bases import knowledge_base_create, knowledge_base_delete
    from knowledge.services.documents import documents_dispatch
    from knowledge.tests.fixtures import embedding_provider

    settings.KNOWLEDGE_TENANT_CONCURRENCY = 4

    def one_at_a_time_kb() -> KnowledgeBase:
        provider = embedding_provider(fake_llm, name="One at a time")
        ModelProvider.objects.filter(pk=provider.pk).update(max_concurrency=1)
        return knowledge_base_create(name="Slow", slug="slow", embedding_provider=provider)

    def remove_slow() -> None:
        for kb in KnowledgeBase.objects.filter(slug="slow"):
            knowledge_base_delete(knowledge_base=kb)
        ModelProvider.objects.filter(name="One at a time").delete()

    slow = committed.run(tenant_a, one_at_a_time_kb)
    committed.on_teardown(tenant_a, remove_slow)
    fast, kb_b = make_kb(tenant=tenant_a), make_kb(tenant=tenant_b)

    # when: three files go to the one-at-a-time provider's knowledge base, then two to the other one's
    slow_ids = upload_many(committed, tenant_a, slow, 3, "slow")
    fast_ids = upload_many(committed, tenant_a, fast, 2, "fast")

    # then: one of the first three is with the workers, and both of the others
    assert queued_tasks(own_queue) == [slow_ids[0], *fast_ids]
    assert committed.run(tenant_a, documents_dispatch) == []

    # and: tenant B's documents do not count against A's provider (B has one of its own)
    (b_id,) = upload_many(committed, tenant_b, kb_b, 1, "beta")
    assert queued_tasks(own_queue) == [slow_ids[0], *fast_ids, b_id]

    # when: the first slow one is ingested, the next one takes its place; only one
    committed.run(tenant_a, lambda: Document.objects.filter(pk=slow_ids[0]).update(status=DocumentStatus.READY))
    assert committed.run(tenant_a, documents_dispatch) == [slow_ids[1]]
    assert committed.run(tenant_a, documents_dispatch) == []

    # when: the provider is allowed three at once, the last one goes too
    committed.run(tenant_a, lambda: ModelProvider.objects.filter(name="One at a time").update(max_concurrency=3))
    assert committed.run(tenant_a, documents_dispatch) == [slow_ids[2]]


def test_a_tenants_documents_are_all_ingested_in_turns_while_another_tenant_is_served_in_between(
    committed: Committed,
    make_kb: Any,
    tenant_a: Any,
    tenant_b: Any,
    fake_llm: FakeOpenAI,
    own_queue: str,
    settings: Any,
) -> None:
    """A real worker (two processes). B's one file, uploaded just after A's five, is ingested before A's fourth:
    in one first-in-first-out queue it came after all five."""
    settings.KNOWLEDGE_TENANT_CONCURRENCY = 2
    fake_llm.embedding_delay_s = 0.3
    kb_a, kb_b = make_kb(tenant=tenant_a), make_kb(tenant=tenant_b)

    with worker_process(own_queue, KNOWLEDGE_TENANT_CONCURRENCY="2"):
        a_ids = upload_many(committed, tenant_a, kb_a, 5, "alpha")
        (b_id,) = upload_many(committed, tenant_b, kb_b, 1, "beta")
        a_docs = wait_for_documents(committed, tenant_a, a_ids)
        (b_doc,) = wait_for_documents(committed, tenant_b, [b_id])

    assert [d.status for d in a_docs] == [DocumentStatus.READY] * 5, [d.error for d in a_docs]
    assert b_doc.status == DocumentStatus.READY, b_doc.error
    a_finished = sorted(d.updated_at for d in a_docs)
    assert b_doc.updated_at < a_finished[3]
    assert queued_tasks(own_queue) == []
