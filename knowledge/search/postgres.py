"""Search in the tenant's own schema: PostgreSQL full-text search plus pgvector (HNSW, cosine), fused.

Every query runs on `knowledge_chunk` of the schema the connection is in, so tenants are separated by
PostgreSQL itself. Embeddings of different knowledge bases may have different sizes, so the column is an
untyped `vector` and each knowledge base gets its own partial HNSW index on `embedding::vector(<dim>)`
(pgvector's recipe for mixed dimensions); a query repeats the index's expression and predicate to use it.

Full text: a chunk's `search_vector` is built with the `english` configuration for English documents and
`simple` over jieba-segmented text for the rest; see KEYWORD_SQL for how a question is matched and ranked.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import OperationalError, connection, transaction

from knowledge.chunking import search_text
from knowledge.extraction.language import detect_language
from knowledge.fields import pgvector_available, pgvector_installed, vector_literal, vector_search_enabled
from knowledge.models import KnowledgeBase
from knowledge.search.base import SearchOutcome, SearchRequest
from knowledge.search.fusion import fuse

logger = logging.getLogger(__name__)

NO_VECTOR_WARNING = (
    "Semantic search is unavailable: the pgvector extension is not installed in this PostgreSQL, "
    "so these are keyword results only."
)

# The query's words OR-ed (a natural-language question rarely has every word in one passage), ranked with
# ts_rank. Ranking reads every matching row, and a common word matches a large share of a big knowledge
# base, so at most KNOWLEDGE_KEYWORD_CANDIDATES matches are ranked: those holding all the words first, then
# the others. Non-English questions are also matched against the `simple` (unstemmed, jieba-segmented) text.
KEYWORD_SQL = """
WITH q AS (SELECT {any_words} AS any_words, {all_words} AS all_words),
candidates AS (
    (SELECT c.id FROM knowledge_chunk c, q
     WHERE c.knowledge_base_id = %(kb)s AND c.live AND c.search_vector @@ q.all_words LIMIT %(cap)s)
    UNION
    (SELECT c.id FROM knowledge_chunk c, q
     WHERE c.knowledge_base_id = %(kb)s AND c.live AND c.search_vector @@ q.any_words LIMIT %(cap)s)
)
SELECT c.id, ts_rank(c.search_vector, q.any_words, 32) AS score
FROM knowledge_chunk c JOIN candidates USING (id), q
ORDER BY score DESC, c.id
LIMIT %(limit)s
"""
ENGLISH_ANY = "replace(plainto_tsquery('english', %(text)s)::text, '&', '|')::tsquery"
SIMPLE_ANY = "replace(plainto_tsquery('simple', %(segmented)s)::text, '&', '|')::tsquery"
ENGLISH_ALL = "plainto_tsquery('english', %(text)s)"
SIMPLE_ALL = "plainto_tsquery('simple', %(segmented)s)"


def keyword_sql(language: str) -> str:
    if language == "en":
        return KEYWORD_SQL.format(any_words=ENGLISH_ANY, all_words=ENGLISH_ALL)
    return KEYWORD_SQL.format(any_words=f"{ENGLISH_ANY} || {SIMPLE_ANY}", all_words=f"{ENGLISH_ALL} || {SIMPLE_ALL}")


def index_name(kb_id: int, dimension: int) -> str:
    return f"knowledge_chunk_hnsw_kb{int(kb_id)}_d{int(dimension)}"


_pgvector_version: list[tuple[int, ...]] = []


def _iterative_scans(cursor: Any) -> bool:
    """pgvector 0.8 added iterative index scans; older versions reserve the `hnsw.` prefix and refuse the
    setting."""
    if not _pgvector_version:
        cursor.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        row = cursor.fetchone()
        _pgvector_version.append(tuple(int(p) for p in row[0].split(".")[:2] if p.isdigit()) if row else ())
    return _pgvector_version[0] >= (0, 8)


def _kb_id(name: str) -> int:
    return int(name.removeprefix("knowledge_chunk_hnsw_kb").split("_d", 1)[0])


def vector_expression(dimension: int) -> str:
    return f"(embedding::vector({int(dimension)}))"


def vector_predicate(kb_id: int, dimension: int) -> str:
    return f"knowledge_base_id = {int(kb_id)} AND vector_dims(embedding) = {int(dimension)}"


def vector_sql(kb_id: int, dimension: int) -> str:
    expr = vector_expression(dimension)
    return (
        f"SELECT id, 1 - ({expr} <=> %s::vector({int(dimension)})) AS score FROM knowledge_chunk "
        f"WHERE {vector_predicate(kb_id, dimension)} AND live "
        f"ORDER BY {expr} <=> %s::vector({int(dimension)}), id LIMIT %s"
    )


class PostgresBackend:
    name = "postgres"

    def vector_available(self) -> bool:
        return vector_search_enabled(connection)

    def knowledge_base_prepare(self, kb: Any) -> None:
        if not self.vector_available():
            return
        wanted = index_name(kb.id, kb.embedding_dimension)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND indexname LIKE %s",
                ["knowledge_chunk_hnsw_kb%"],
            )
            existing = [name for (name,) in cursor.fetchall()]
            live_ids = set(KnowledgeBase.objects.values_list("pk", flat=True))
            cursor.execute(
                f'CREATE INDEX IF NOT EXISTS "{wanted}" ON knowledge_chunk USING hnsw '
                f"({vector_expression(kb.embedding_dimension)} vector_cosine_ops) "
                f"WHERE {vector_predicate(kb.id, kb.embedding_dimension)}"
            )
        # Left by an earlier embedding model of this knowledge base, or by deleted knowledge bases.
        stale = [n for n in existing if n != wanted and (_kb_id(n) == kb.id or _kb_id(n) not in live_ids)]
        self._drop_indexes(stale)

    def knowledge_base_drop(self, kb: Any) -> None:
        """Drop the knowledge base's vector index, but never wait behind other transactions for it (that
        lock would stall every search meanwhile): a busy table leaves the empty index for the next
        knowledge_base_prepare to remove."""
        self._drop_indexes([index_name(kb.id, kb.embedding_dimension)])

    def _drop_indexes(self, names: list[str]) -> None:
        for name in names:
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute("SET LOCAL lock_timeout = '500ms'")
                    cursor.execute(f'DROP INDEX IF EXISTS "{name}"')
            except OperationalError:
                logger.info("index %s is busy; it will be dropped later", name)

    def chunks_index(self, kb: Any, chunks: list[Any]) -> None:
        """Nothing to do: the chunk rows are the index (full text and HNSW are maintained by PostgreSQL)."""

    def document_prune(self, kb: Any, document_id: int, keep_generation: int | None) -> None:
        """Nothing to do: chunk rows are deleted by the ingestion service itself."""

    def search(self, request: SearchRequest) -> SearchOutcome:
        warnings: list[str] = []
        mode = request.mode
        if mode != "keyword" and (request.query_vector is None or not self.vector_available()):
            if not self.vector_available():
                warnings.append(NO_VECTOR_WARNING)
            mode = "keyword"
        keyword: list[tuple[int, float]] = []
        vector: list[tuple[int, float]] = []
        with transaction.atomic(), connection.cursor() as cursor:
            if mode in ("hybrid", "keyword"):
                language = detect_language(request.query)
                params = {
                    "text": request.query,
                    "segmented": search_text(request.query, language),
                    "kb": request.knowledge_base_id,
                    "cap": settings.KNOWLEDGE_KEYWORD_CANDIDATES,
                    "limit": request.candidates,
                }
                cursor.execute(keyword_sql(language), params)
                keyword = [(row[0], float(row[1])) for row in cursor.fetchall()]
            if mode in ("hybrid", "semantic"):
                # ef_search bounds what one HNSW scan returns; iterative scans keep going when rows are
                # filtered out (chunks of a generation being built).
                cursor.execute("SELECT set_config('hnsw.ef_search', %s, true)", [str(max(100, request.candidates))])
                if _iterative_scans(cursor):
                    cursor.execute("SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true)")
                literal = vector_literal(request.query_vector or [])
                cursor.execute(
                    vector_sql(request.knowledge_base_id, request.dimension), [literal, literal, request.candidates]
                )
                vector = [(row[0], float(row[1])) for row in cursor.fetchall()]
        hits = fuse(keyword, vector, fusion=request.fusion, keyword_weight=request.keyword_weight)
        return SearchOutcome(hits=hits[: request.candidates], mode=mode, warnings=warnings)

    def health(self) -> dict[str, Any]:
        available = pgvector_available(connection)
        if available is None:
            return {
                "ok": True,
                "backend": self.name,
                "vector": False,
                "warning": "pgvector is not installed in this PostgreSQL: keyword search only",
            }
        if not pgvector_installed(connection):
            return {
                "ok": True,
                "backend": self.name,
                "vector": False,
                "warning": f"pgvector {available} is available but not enabled: run the migrations as a superuser "
                "(CREATE EXTENSION vector); keyword search only until then",
            }
        return {"ok": True, "backend": self.name, "vector": True, "pgvector": available}
