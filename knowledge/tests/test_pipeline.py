"""The ingestion pipeline and search, run in the test process on real PostgreSQL and Redis (the service the
Celery task calls, called directly); the embedding provider is the local OpenAI-compatible test server.
Worker-level behaviour (retries after a kill, cancel, live progress) is in test_ingestion_worker.py."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import connection
from django_tenants.utils import tenant_context

from agents.tools.knowledge import KnowledgeHit
from knowledge.chunking import chunk_blocks
from knowledge.extraction import extract
from knowledge.fields import vector_search_enabled
from knowledge.models import Chunk, Document, DocumentStatus, KnowledgeBase
from knowledge.search.postgres import NO_VECTOR_WARNING
from knowledge.services.bases import knowledge_base_create, knowledge_base_update
from knowledge.services.documents import document_cancel, document_delete, document_reindex, document_upload
from knowledge.services.ingestion import document_ingest
from knowledge.services.search import agent_knowledge_search, knowledge_search
from knowledge.tests.fixtures import embedding_provider
from nexent_site.errors import ApplicationError
from nexent_site.testing.fake_openai import FakeOpenAI

pytestmark = pytest.mark.django_db

HANDBOOK = """# Travel policy

## Flights
Employees book economy class for flights shorter than six hours. Business class needs a director's approval.

## Hotels
Hotels are booked through the travel desk. The nightly limit is 180 euros in most cities.

# Expenses

## Meals
Meals are reimbursed up to 40 euros a day with receipts.

## Refunds
The zephyr refund form must be filed within thirty days of the trip.
"""


def kb_in(fake: FakeOpenAI, slug: str = "policies", **options: Any) -> KnowledgeBase:
    return knowledge_base_create(name=slug.title(), slug=slug, embedding_provider=embedding_provider(fake), **options)


def ingest(kb: KnowledgeBase, name: str, data: bytes) -> Document:
    document = document_upload(knowledge_base=kb, upload=ContentFile(data, name=name))
    document_ingest(document_id=document.pk)
    document.refresh_from_db()
    return document


def test_a_markdown_document_is_chunked_by_section_embedded_and_made_live(fake_llm: FakeOpenAI, tenant_a: Any) -> None:
    with tenant_context(tenant_a):
        # given
        kb = kb_in(fake_llm, chunk_size=60, chunk_overlap=10)
        # when
        document = ingest(kb, "handbook.md", HANDBOOK.encode())
        # then
        assert document.status == DocumentStatus.READY, document.error
        assert document.progress == 100 and document.language == "en"
        chunks = list(document.chunks.order_by("position"))
        expected = chunk_blocks(
            extract(HANDBOOK.encode(), content_type="text/markdown", name="h.md").blocks, size=60, overlap=10
        )
        assert [c.text for c in chunks] == [d.text for d in expected]
        assert document.chunk_count == len(chunks) >= 4
        assert all(c.live and c.generation == document.live_generation for c in chunks)
        assert all(c.embedding is not None and len(c.embedding) == 384 for c in chunks)
        refunds = next(c for c in chunks if "zephyr" in c.text)
        assert refunds.heading_path.endswith("Refunds")
        # the heading path was part of what got embedded
        assert any(text.startswith(refunds.heading_path) for batch in fake_llm.embedding_requests for text in batch)


def test_search_returns_documents_pages_and_all_three_scores(fake_llm: FakeOpenAI, tenant_a: Any) -> None:
    with tenant_context(tenant_a):
        kb = kb_in(fake_llm, chunk_size=60, chunk_overlap=10)
        ingest(kb, "handbook.md", HANDBOOK.encode())
        # when
        result = knowledge_search(knowledge_bases=[kb], query="How long do I have to file the zephyr refund form?")
        # then
        top = result.hits[0]
        assert "zephyr refund form" in top.text
        assert top.document_title == "handbook" and top.knowledge_base == "policies"
        assert top.keyword_rank == 1 and top.keyword_score > 0
        assert 0 < top.score <= 1
        if vector_search_enabled(connection):
            assert result.mode == "hybrid" and result.warnings == []
            assert top.vector_score is not None and top.vector_rank is not None
        else:
            # PostgreSQL without pgvector: keyword-only, and said so, not a crash
            assert result.mode == "keyword" and NO_VECTOR_WARNING in result.warnings
            assert top.vector_score is None


def test_hybrid_ranking_fuses_lists_that_disagree(fake_llm: FakeOpenAI, tenant_a: Any) -> None:
    """Keyword search (stemmed, stop words dropped) and the test embedder (bag of all words) are built to
    disagree: the stop-word-heavy passage wins on vectors only, the passage with the rare word but little
    else wins on keywords only; the passage good on both comes first in hybrid mode."""
    with tenant_context(tenant_a):
        if not vector_search_enabled(connection):
            pytest.skip("needs pgvector (the embedded PostgreSQL has it; this run's PostgreSQL has not)")
        kb = kb_in(fake_llm, chunk_size=200, chunk_overlap=0)
        ingest(kb, "vector-only.txt", b"what is it that is the what of the is and the it")
        ingest(kb, "keyword-only.txt", b"Quarterly zephyr numbers. " + b"Revenue grew in every region. " * 6)
        ingest(kb, "both.txt", b"what is the zephyr policy and what is it for")
        query = "what is the zephyr policy"

        def titles(mode: str) -> list[str]:
            return [h.document_title for h in knowledge_search(knowledge_bases=[kb], query=query, mode=mode).hits]

        keyword, vector, hybrid = titles("keyword"), titles("semantic"), titles("hybrid")
        assert "vector-only" not in keyword  # no keyword in common but stop words
        assert vector[0] in ("vector-only", "both") and vector.index("vector-only") < vector.index("keyword-only")
        assert keyword.index("keyword-only") < len(keyword)
        assert hybrid[0] == "both"
        assert set(hybrid) == {"vector-only", "keyword-only", "both"}


def test_score_threshold_and_top_k_limit_results(fake_llm: FakeOpenAI, tenant_a: Any) -> None:
    with tenant_context(tenant_a):
        kb = kb_in(fake_llm, chunk_size=60, chunk_overlap=10, top_k=2)
        ingest(kb, "handbook.md", HANDBOOK.encode())
        assert len(knowledge_search(knowledge_bases=[kb], query="euros hotels meals flights").hits) == 2
        assert len(knowledge_search(knowledge_bases=[kb], query="euros", top_k=1).hits) == 1
        everything = knowledge_search(knowledge_bases=[kb], query="euros hotels meals", top_k=10, score_threshold=0)
        strict = knowledge_search(knowledge_bases=[kb], query="euros hotels meals", top_k=10, score_threshold=0.99)
        assert len(strict.hits) < len(everything.hits)
        assert all(hit.score >= 0.99 for hit in strict.hits)


def test_chinese_text_is_searchable_by_word(fake_llm: FakeOpenAI, tenant_a: Any) -> None:
    with tenant_context(tenant_a):
        kb = kb_in(fake_llm)
        document = ingest(kb, "制度.txt", "员工差旅报销需要在三十天内提交申请。\n\n会议室预订请使用内部系统。".encode())
        assert document.status == DocumentStatus.READY and document.language == "zh"
        hits = knowledge_search(knowledge_bases=[kb], query="报销", mode="keyword").hits
        assert hits and "报销" in hits[0].text


def test_a_provider_answering_another_dimension_fails_the_document_with_the_reason(
    fake_llm: FakeOpenAI, tenant_a: Any
) -> None:
    with tenant_context(tenant_a):
        kb = kb_in(fake_llm)
        fake_llm.dimension = 256  # the provider was swapped behind the knowledge base's back
        document = ingest(kb, "notes.txt", b"Some notes worth keeping.")
        assert document.status == DocumentStatus.FAILED
        assert "256 dimensions, expected 384" in document.error
        assert not Chunk.objects.filter(document=document).exists()


def test_transient_embedding_failures_are_retried_with_backoff(
    fake_llm: FakeOpenAI, tenant_a: Any, settings: Any
) -> None:
    settings.KNOWLEDGE_EMBED_BACKOFF_S = 0.01
    with tenant_context(tenant_a):
        kb = kb_in(fake_llm)
        fake_llm.embedding_requests.clear()
        fake_llm.embedding_failures = 2  # two 503s, then answers
        document = ingest(kb, "notes.txt", b"Some notes worth keeping.")
        assert document.status == DocumentStatus.READY, document.error
        assert len(fake_llm.embedding_requests) == 3


def test_an_embedding_outage_fails_the_document_with_the_reason_and_retry_works(
    fake_llm: FakeOpenAI, tenant_a: Any, settings: Any
) -> None:
    settings.KNOWLEDGE_EMBED_BACKOFF_S = 0.01
    settings.KNOWLEDGE_EMBED_RETRIES = 2
    with tenant_context(tenant_a):
        kb = kb_in(fake_llm)
        fake_llm.embedding_failures = 10
        document = ingest(kb, "notes.txt", b"Some notes worth keeping.")
        assert document.status == DocumentStatus.FAILED
        assert "Embedding failed" in document.error and "503" in document.error
        # when the provider is back and the document is retried
        fake_llm.embedding_failures = 0
        from knowledge.services.documents import document_retry

        document_retry(document=document)
        document_ingest(document_id=document.pk)
        document.refresh_from_db()
        assert document.status == DocumentStatus.READY and document.attempts == 2


def test_a_corrupt_file_fails_with_a_clear_reason(fake_llm: FakeOpenAI, tenant_a: Any) -> None:
    with tenant_context(tenant_a):
        kb = kb_in(fake_llm)
        document = ingest(kb, "broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog")
        assert document.status == DocumentStatus.FAILED
        assert "pdf" in document.error.lower()
        assert document.chunk_count == 0 and not document.chunks.exists()


@pytest.mark.parametrize(
    ("name", "data", "code"),
    [
        ("empty.txt", b"", "empty_file"),
        ("locked.docx", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 600, "encrypted_office"),
        ("tool.exe", b"MZ\x90\x00" + b"\x00" * 200, "unsupported_type"),
    ],
)
def test_uploads_that_cannot_be_ingested_are_refused_and_nothing_is_stored(
    fake_llm: FakeOpenAI, tenant_a: Any, name: str, data: bytes, code: str
) -> None:
    from files.models import StoredFile

    with tenant_context(tenant_a):
        kb = kb_in(fake_llm)
        with pytest.raises(ApplicationError) as refused:
            document_upload(knowledge_base=kb, upload=ContentFile(data, name=name))
        assert refused.value.code == code and name in refused.value.message
        assert not kb.documents.exists() and not StoredFile.objects.filter(original_name=name).exists()


def test_reindex_builds_a_new_generation_while_the_old_one_stays_searchable(
    fake_llm: FakeOpenAI, tenant_a: Any
) -> None:
    with tenant_context(tenant_a):
        kb = kb_in(fake_llm, chunk_size=60, chunk_overlap=10)
        document = ingest(kb, "handbook.md", HANDBOOK.encode())
        old_ids = set(document.chunks.values_list("id", flat=True))
        # when a reindex is queued but not yet run, search still answers from the live chunks
        document_reindex(document=document)
        hits = knowledge_search(knowledge_bases=[kb], query="zephyr refund form").hits
        assert hits and hits[0].chunk_id in old_ids
        # and once it ran, exactly one (new) set is left
        document_ingest(document_id=document.pk)
        document.refresh_from_db()
        new_ids = set(document.chunks.values_list("id", flat=True))
        assert document.status == DocumentStatus.READY and document.live_generation == 2
        assert new_ids and not (new_ids & old_ids) and len(new_ids) == len(old_ids)
        assert knowledge_search(knowledge_bases=[kb], query="zephyr refund form").hits[0].chunk_id in new_ids


def test_cancelling_a_reindex_keeps_the_live_chunks(fake_llm: FakeOpenAI, tenant_a: Any) -> None:
    with tenant_context(tenant_a):
        kb = kb_in(fake_llm, chunk_size=60, chunk_overlap=10)
        document = ingest(kb, "handbook.md", HANDBOOK.encode())
        live = set(document.chunks.values_list("id", flat=True))
        document_reindex(document=document)
        document_cancel(document=document)
        assert document_ingest(document_id=document.pk) == "skipped"
        document.refresh_from_db()
        assert document.status == DocumentStatus.READY
        assert set(document.chunks.values_list("id", flat=True)) == live


def test_cancelling_a_first_ingestion_leaves_it_cancelled_with_nothing_indexed(
    fake_llm: FakeOpenAI, tenant_a: Any
) -> None:
    with tenant_context(tenant_a):
        kb = kb_in(fake_llm)
        document = document_upload(knowledge_base=kb, upload=ContentFile(HANDBOOK.encode(), name="h.md"))
        document_cancel(document=document)
        assert document_ingest(document_id=document.pk) == "skipped"
        document.refresh_from_db()
        assert document.status == DocumentStatus.CANCELLED and not document.chunks.exists()
        with pytest.raises(ApplicationError):
            document_cancel(document=document)


def test_deleting_a_document_removes_its_chunks_and_file(fake_llm: FakeOpenAI, tenant_a: Any) -> None:
    from files.models import StoredFile

    with tenant_context(tenant_a):
        kb = kb_in(fake_llm)
        document = ingest(kb, "handbook.md", HANDBOOK.encode())
        file_id = document.file_id
        document_delete(document=document)
        assert not Chunk.objects.filter(document_id=document.pk).exists()
        assert not StoredFile.objects.filter(pk=file_id).exists()
        assert knowledge_search(knowledge_bases=[kb], query="zephyr").hits == []


def test_new_chunking_settings_reindex_every_document(fake_llm: FakeOpenAI, tenant_a: Any) -> None:
    with tenant_context(tenant_a):
        kb = kb_in(fake_llm, chunk_size=60, chunk_overlap=10)
        text = "\n\n".join(f"Paragraph {i} explains step {i} of the procedure in a dozen words." for i in range(40))
        document = ingest(kb, "steps.txt", text.encode())
        small = document.chunk_count
        knowledge_base_update(knowledge_base=kb, chunk_size=400)
        document.refresh_from_db()
        assert document.status == DocumentStatus.QUEUED
        document_ingest(document_id=document.pk)
        document.refresh_from_db()
        assert document.status == DocumentStatus.READY and 0 < document.chunk_count < small / 3


def test_knowledge_base_settings_are_validated_with_field_names(fake_llm: FakeOpenAI, tenant_a: Any) -> None:
    with tenant_context(tenant_a):
        with pytest.raises(ValidationError) as invalid:
            kb_in(fake_llm, chunk_size=100, chunk_overlap=100)
        assert "chunk_overlap" in invalid.value.message_dict
        chat = embedding_provider(fake_llm, name="Chat only")
        chat.kind = "chat"
        chat.save()
        with pytest.raises(ValidationError) as wrong_kind:
            knowledge_base_create(name="X", slug="x", embedding_provider=chat)
        assert "embedding_provider" in wrong_kind.value.message_dict


def test_agents_search_by_slug_and_get_citable_hits(fake_llm: FakeOpenAI, tenant_a: Any) -> None:
    with tenant_context(tenant_a):
        kb = kb_in(fake_llm, chunk_size=60, chunk_overlap=10)
        document = ingest(kb, "handbook.md", HANDBOOK.encode())
        hits = agent_knowledge_search(query="zephyr refund form", knowledge_bases=["policies", "gone"], top_k=3)
        assert hits and isinstance(hits[0], KnowledgeHit)
        assert hits[0].document_id == document.pk and hits[0].knowledge_base == "policies"
        assert Chunk.objects.filter(pk=hits[0].chunk_id, document=document).exists()


def test_another_tenant_cannot_search_or_see_the_knowledge(fake_llm: FakeOpenAI, tenant_a: Any, tenant_b: Any) -> None:
    with tenant_context(tenant_a):
        kb = kb_in(fake_llm, chunk_size=60, chunk_overlap=10)
        document = ingest(kb, "handbook.md", HANDBOOK.encode())
        chunk_ids = list(document.chunks.values_list("id", flat=True))
    with tenant_context(tenant_b):
        # the same slug and ids mean nothing in B's schema
        assert agent_knowledge_search(query="zephyr refund form", knowledge_bases=["policies"], top_k=5) == []
        assert not KnowledgeBase.objects.filter(pk=kb.pk).exists()
        assert not Document.objects.filter(pk=document.pk).exists()
        assert not Chunk.objects.filter(pk__in=chunk_ids).exists()
        # an ingestion task carrying A's document id, run in B's schema, finds nothing to do
        assert document_ingest(document_id=document.pk) == "skipped"
        # a knowledge base of B's own with the same slug finds only B's documents
        own = kb_in(fake_llm, chunk_size=60, chunk_overlap=10)
        ingest(own, "other.md", b"# Other\n\nNothing about refunds here, only gardening.")
        hits = knowledge_search(knowledge_bases=[own], query="zephyr refund form").hits
        assert all(hit.document_title == "other" for hit in hits)


def test_agents_may_only_name_knowledge_bases_that_exist(fake_llm: FakeOpenAI, tenant_a: Any) -> None:
    from agents.models import Agent
    from agents.services.agents import agent_export, agent_import, agent_publish, agent_tool_add

    with tenant_context(tenant_a):
        kb = kb_in(fake_llm, slug="faq")
        agent = Agent.objects.create(name="Helper", slug="kb-helper", mode="tools")
        # adding the tool with a missing knowledge base is a field error
        with pytest.raises(ValidationError) as missing:
            agent_tool_add(agent=agent, tool="knowledge_search", config={"knowledge_bases": ["faq", "nope"]})
        assert "“nope”" in missing.value.message_dict["config"][0]
        agent_tool_add(agent=agent, tool="knowledge_search", config={"knowledge_bases": ["faq"]})
        agent_publish(agent=agent)
        exported = agent_export(agent=agent)
        # publishing after the knowledge base is gone is refused, naming it
        from knowledge.services.bases import knowledge_base_delete

        knowledge_base_delete(knowledge_base=kb)
        with pytest.raises(ValidationError) as gone:
            agent_publish(agent=agent)
        assert "“faq”" in gone.value.message_dict["tools"][0]
        # importing an agent that names it reports the tool by position
        exported["agent"]["slug"] = "kb-helper-2"
        with pytest.raises(ValidationError) as imported:
            agent_import(data=exported)
        assert any("“faq”" in m for m in imported.value.message_dict["tools[0]"])
