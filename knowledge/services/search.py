"""Searching knowledge bases: the query embedded once per embedding model, each knowledge base searched by
the configured backend, results turned into hits (document, page, chunk, scores) from live chunks only,
filtered by the score threshold and merged."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

from django.db import connection

from knowledge.models import Chunk, KnowledgeBase
from knowledge.search import search_backend
from knowledge.search.base import SearchRequest
from knowledge.services.embedding import embed_query
from nexent_site.integrations.openai_compat import ProviderError

logger = logging.getLogger(__name__)

MAX_QUERY_CHARS = 2000


@dataclass
class Hit:
    chunk_id: int
    document_id: int
    document_title: str
    knowledge_base: str
    page: int | None
    heading_path: str
    text: str
    score: float
    keyword_score: float | None = None
    vector_score: float | None = None
    keyword_rank: int | None = None
    vector_rank: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SearchResult:
    hits: list[Hit]
    mode: str
    warnings: list[str] = field(default_factory=list)


def knowledge_search(
    *,
    knowledge_bases: list[KnowledgeBase],
    query: str,
    top_k: int | None = None,
    mode: str | None = None,
    score_threshold: float | None = None,
) -> SearchResult:
    """Search the given knowledge bases (of the current tenant) with each one's defaults unless overridden.
    Never fails because the embedding model is down: it falls back to keyword search and says so."""
    query = query.strip()[:MAX_QUERY_CHARS]
    if not query or not knowledge_bases:
        return SearchResult(hits=[], mode=mode or "hybrid")
    backend = search_backend()
    vectors: dict[int, list[float] | None] = {}
    warnings: list[str] = []
    hits: list[Hit] = []
    modes = set()
    limit = top_k or max(kb.top_k for kb in knowledge_bases)
    for kb in knowledge_bases:
        kb_mode = mode or kb.search_mode
        vector = None
        if kb_mode != "keyword" and backend.vector_available():
            if kb.embedding_provider_id not in vectors:
                try:
                    vectors[kb.embedding_provider_id] = embed_query(kb, query)
                except ProviderError as exc:
                    vectors[kb.embedding_provider_id] = None
                    warnings.append(f"Semantic search is unavailable ({exc.message}): keyword results only.")
            vector = vectors[kb.embedding_provider_id]
        outcome = backend.search(
            SearchRequest(
                schema_name=connection.schema_name,
                knowledge_base_id=kb.pk,
                dimension=kb.embedding_dimension,
                query=query,
                query_vector=vector,
                mode=kb_mode,
                top_k=top_k or kb.top_k,
                fusion=kb.fusion,
                keyword_weight=kb.keyword_weight,
                candidates=max(50, (top_k or kb.top_k) * 4),
            )
        )
        modes.add(outcome.mode)
        warnings.extend(w for w in outcome.warnings if w not in warnings)
        threshold = kb.score_threshold if score_threshold is None else score_threshold
        hits.extend(_hydrate(kb, [h for h in outcome.hits if h.score >= threshold][: (top_k or kb.top_k) * 2]))
    hits.sort(key=lambda hit: (-hit.score, hit.chunk_id))
    used = modes.pop() if len(modes) == 1 else "mixed"
    return SearchResult(hits=hits[:limit], mode=used, warnings=warnings)


def _hydrate(kb: KnowledgeBase, scored: list) -> list[Hit]:
    """Live chunks only (a backend may still hold ids of a replaced generation), in the backend's order."""
    chunks = {
        chunk.pk: chunk
        for chunk in Chunk.objects.filter(pk__in=[s.chunk_id for s in scored], knowledge_base=kb, live=True)
        .select_related("document")
        .only("id", "page", "heading_path", "text", "document__id", "document__title")
    }
    hits = []
    for item in scored:
        chunk = chunks.get(item.chunk_id)
        if chunk is None:
            continue
        hits.append(
            Hit(
                chunk_id=chunk.pk,
                document_id=chunk.document.pk,
                document_title=chunk.document.title,
                knowledge_base=kb.slug,
                page=chunk.page,
                heading_path=chunk.heading_path,
                text=chunk.text,
                score=round(item.score, 6),
                keyword_score=item.keyword_score,
                vector_score=item.vector_score,
                keyword_rank=item.keyword_rank,
                vector_rank=item.vector_rank,
            )
        )
    return hits


def agent_knowledge_search(*, query: str, knowledge_bases: list[str], top_k: int) -> list:
    """The searcher behind agents' knowledge_search tool: knowledge bases named by slug, in this tenant."""
    from agents.tools.knowledge import KnowledgeHit

    bases = list(KnowledgeBase.objects.filter(slug__in=knowledge_bases).select_related("embedding_provider"))
    missing = set(knowledge_bases) - {kb.slug for kb in bases}
    if missing:
        logger.warning("knowledge_search: no knowledge base %s in %s", sorted(missing), connection.schema_name)
    result = knowledge_search(knowledge_bases=bases, query=query, top_k=top_k)
    return [
        KnowledgeHit(
            document_id=hit.document_id,
            document_title=hit.document_title,
            chunk_id=hit.chunk_id,
            text=hit.text,
            score=hit.score,
            page=hit.page,
            knowledge_base=hit.knowledge_base,
        )
        for hit in result.hits
    ]


def knowledge_bases_existing(slugs: list[str]) -> set[str]:
    return set(KnowledgeBase.objects.filter(slug__in=slugs).values_list("slug", flat=True))
