"""The interface every search backend implements (PostgreSQL by default, Elasticsearch when configured).

Chunks live in PostgreSQL whatever the backend: it is the source of truth for text, pages and embeddings.
A backend indexes them and answers with chunk ids and scores; `knowledge.services.search` turns those into
hits (documents, pages, texts) and keeps only live chunks, so a backend may return a few stale ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from knowledge.models import Chunk, KnowledgeBase


@dataclass(frozen=True)
class SearchRequest:
    schema_name: str
    knowledge_base_id: int
    dimension: int
    query: str
    query_vector: list[float] | None
    mode: str  # "hybrid" | "keyword" | "semantic"
    top_k: int
    fusion: str = "rrf"  # "rrf" | "weighted"
    keyword_weight: float = 0.4
    candidates: int = 50  # how many hits each list brings to the fusion


@dataclass
class ScoredChunk:
    chunk_id: int
    score: float  # fused relevance, 0..1
    keyword_score: float | None = None
    vector_score: float | None = None
    keyword_rank: int | None = None
    vector_rank: int | None = None


@dataclass
class SearchOutcome:
    hits: list[ScoredChunk]
    mode: str  # the mode actually used
    warnings: list[str] = field(default_factory=list)


class SearchBackend(Protocol):
    name: str

    def vector_available(self) -> bool: ...

    def knowledge_base_prepare(self, kb: KnowledgeBase) -> None:
        """Create what the knowledge base's searches need (indexes). Idempotent."""

    def knowledge_base_drop(self, kb: KnowledgeBase) -> None:
        """Remove everything indexed for the knowledge base. Idempotent."""

    def chunks_index(self, kb: KnowledgeBase, chunks: list[Chunk]) -> None:
        """Index (or re-index) these chunks, which carry their embeddings. Idempotent by chunk id."""

    def document_prune(self, kb: KnowledgeBase, document_id: int, keep_generation: int | None) -> None:
        """Remove the document's indexed chunks except those of `keep_generation` (None: remove all)."""

    def search(self, request: SearchRequest) -> SearchOutcome: ...

    def health(self) -> dict[str, Any]: ...
