"""`make bench-search`: search latency over 100,000 chunks in one tenant with the PostgreSQL backend.

Starts (or reuses) the embedded PostgreSQL (with pgvector) and Redis, a tenant `bench` and a knowledge base
`bench-search` holding `--chunks` chunks of generated text (a 5,000-word vocabulary drawn with a Zipf-like
distribution whose top ranks are English function words, as in real prose). Chunk embeddings are the deterministic
bag-of-words vectors of the local OpenAI-compatible test server (384 dimensions), so semantic search finds
what shares words, as a real model would find what shares meaning; the query is embedded by that server
over HTTP, which is part of each measured search. Loaded once with COPY, reused by later runs.

Each search is the whole service (`knowledge.services.search.knowledge_search`): query embedding over HTTP,
the SQL of the chosen mode (full text with ts_rank_cd; HNSW with ef_search 100; both fused by RRF) and
loading the hit rows. Reported: p50/p95 per mode over `--queries` queries of 1 to 4 words, after a warm-up.
Last line: JSON.

    python bench/search.py [--chunks 100000] [--queries 300]
"""

from __future__ import annotations

import argparse
import io
import json
import random
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.common import percentile, setup_django  # noqa: E402

DIMENSION = 384
CHUNKS_PER_DOCUMENT = 100
LOAD_VERSION = "bench corpus v2"  # change when the generated corpus changes, so a stale load is replaced


# Real text's most frequent words are function words, which the `english` text-search configuration drops;
# they take the top ranks here too, so the content words' frequencies are those of real prose.
STOP_TEXT = (
    "the of and to a in is it that for was on are with as be at by this have from or an but not what all were "
    "we when your can said there use each which she do how their if will up other about out many then them "
    "these so some her would make like him into has look two more go see no could people my than first been "
    "who its now did get come made may part over new after also any our these most very through just where"
)
STOP_WORDS = STOP_TEXT.split(" ")


def vocabulary(size: int = 5000) -> tuple[list[str], list[float]]:
    rng = random.Random(7)
    consonants, vowels = "bcdfghjklmnprstvwz", "aeiou"
    stop = list(dict.fromkeys(STOP_WORDS))
    words: set[str] = set()
    while len(words) < size - len(stop):
        length = rng.randint(2, 5)
        word = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(length // 2 + 1))
        if word not in stop:
            words.add(word)
    content = sorted(words)
    rng.shuffle(content)
    ordered = stop + content
    weights = [1 / (rank + 1) ** 1.05 for rank in range(len(ordered))]  # Zipf-like
    return ordered, weights


def prepare(chunks: int, embed_url: str) -> object:
    """The tenant and knowledge base, loaded with `chunks` chunks unless already there. Returns the kb."""
    from django.core.management import call_command
    from django.db import connection
    from django_tenants.utils import tenant_context

    from agents.models import ModelProvider
    from agents.services.providers import provider_save
    from knowledge.models import Chunk, Document, KnowledgeBase
    from knowledge.search import search_backend
    from knowledge.services.bases import knowledge_base_create, knowledge_base_delete
    from tenants.models import Tenant
    from tenants.services import platform_tenant_ensure, tenant_create

    call_command("migrate_schemas", "--noinput", verbosity=0)
    platform_tenant_ensure()
    tenant = Tenant.objects.filter(schema_name="bench").first() or tenant_create(
        slug="bench", name="Bench", owner_email="bench@bench.test", owner_password="Bench-Password-123"
    )
    with tenant_context(tenant):
        provider = ModelProvider.objects.filter(name="Bench embeddings").first() or ModelProvider(
            name="Bench embeddings"
        )
        provider.kind, provider.base_url, provider.model_name = "embedding", embed_url, "fake-embed"
        provider.dimension, provider.max_concurrency = DIMENSION, 1000
        provider = provider_save(provider=provider, api_key="")
        kb = KnowledgeBase.objects.filter(slug="bench-search").first()
        loaded = kb is not None and kb.description == LOAD_VERSION
        if loaded and Chunk.objects.filter(knowledge_base=kb, live=True).count() == chunks:
            kb.embedding_provider = provider
            print(f"reusing {chunks} chunks loaded earlier")
            return tenant, kb
        if kb is not None:
            knowledge_base_delete(knowledge_base=kb)
        kb = knowledge_base_create(
            name="Bench search", slug="bench-search", embedding_provider=provider, description=LOAD_VERSION
        )
        search_backend().knowledge_base_drop(kb)  # bulk-load first, then build the HNSW index in one go
        _load(kb, chunks)
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("SET maintenance_work_mem = '1GB'")
        search_backend().knowledge_base_prepare(kb)
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE knowledge_chunk")
        print(f"HNSW index built in {time.perf_counter() - started:.1f} s")
        assert Document.objects.filter(knowledge_base=kb).count() == -(-chunks // CHUNKS_PER_DOCUMENT)
        return tenant, kb


def _load(kb: object, chunks: int) -> None:
    from django.db import connection

    from files.models import StoredFile
    from knowledge.fields import vector_literal
    from knowledge.models import Document
    from nexent_site.testing.fake_openai import fake_embedding

    words, weights = vocabulary()
    rng = random.Random(11)
    started = time.perf_counter()
    documents = []
    for number in range(-(-chunks // CHUNKS_PER_DOCUMENT)):
        stored = StoredFile.objects.create(
            original_name=f"doc-{number}.txt",
            size=1,
            content_type="text/plain",
            sha256="0" * 64,
            storage_key=f"bench/{kb.pk}/{number}",
        )
        documents.append(
            Document.objects.create(
                knowledge_base=kb, file=stored, title=f"doc-{number}", status="ready", progress=100, live_generation=1
            )
        )
    buffer = io.StringIO()
    for index in range(chunks):
        document = documents[index // CHUNKS_PER_DOCUMENT]
        text = " ".join(rng.choices(words, weights, k=rng.randint(60, 140)))
        vector = vector_literal(fake_embedding(text, DIMENSION))
        position = index % CHUNKS_PER_DOCUMENT
        buffer.write(f"{kb.pk}\t{document.pk}\t1\tt\t{position}\t\\N\t\t{text}\t{len(text.split())}\t{vector}\n")
    buffer.seek(0)
    columns = "knowledge_base_id, document_id, generation, live, position, page, heading_path, text, token_count"
    with connection.cursor() as cursor:
        # COPY into a staging table, then one INSERT computing the full-text vectors: an UPDATE afterwards
        # would write every row twice.
        cursor.execute(f"CREATE TEMP TABLE chunk_load AS SELECT {columns}, embedding FROM knowledge_chunk WITH NO DATA")
        with cursor.copy(f"COPY chunk_load ({columns}, embedding) FROM STDIN") as copy:
            while data := buffer.read(1 << 20):
                copy.write(data)
        cursor.execute(
            f"INSERT INTO knowledge_chunk ({columns}, search_vector, embedding) "
            f"SELECT {columns}, to_tsvector('english', text), embedding FROM chunk_load"
        )
        cursor.execute("DROP TABLE chunk_load")
    print(f"loaded {chunks} chunks in {time.perf_counter() - started:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args()

    from nexent_site.devstack import start_services

    services = start_services(redis_db=3)
    fake = None
    try:
        setup_django()
        from django.db import connection
        from django_tenants.utils import tenant_context

        from knowledge.fields import vector_search_enabled
        from knowledge.services.search import knowledge_search
        from nexent_site.testing.fake_openai import FakeOpenAI

        fake = FakeOpenAI(dimension=DIMENSION).start()
        tenant, kb = prepare(args.chunks, fake.base_url)
        words, weights = vocabulary()
        rng = random.Random(23)
        queries = [" ".join(rng.choices(words, weights, k=rng.randint(1, 4))) for _ in range(args.queries)]
        figures: dict[str, float | int] = {"chunks": args.chunks}
        with tenant_context(tenant):
            if not vector_search_enabled(connection):
                raise SystemExit("this PostgreSQL has no pgvector: run with the embedded one (unset DATABASE_URL)")
            print(f"nexent bench-search: {args.chunks} chunks, {args.queries} queries per mode, top 5")
            for mode in ("keyword", "semantic", "hybrid"):
                for query in queries[:30]:  # warm-up: caches, plans, connections
                    knowledge_search(knowledge_bases=[kb], query=query, mode=mode, top_k=5)
                timings, empty = [], 0
                for query in queries:
                    started = time.perf_counter()
                    result = knowledge_search(knowledge_bases=[kb], query=query, mode=mode, top_k=5)
                    timings.append((time.perf_counter() - started) * 1000)
                    empty += not result.hits
                p50, p95 = percentile(timings, 0.5), percentile(timings, 0.95)
                print(f"{mode:>8}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {max(timings):.1f} ms ({empty} empty)")
                key = "vector" if mode == "semantic" else mode
                figures[f"{key}_p95_ms"] = round(p95, 1)
                if mode == "hybrid":
                    figures["hybrid_p50_ms"] = round(p50, 1)
        print(json.dumps(figures))
    finally:
        if fake is not None:
            fake.stop()
        services.stop()


if __name__ == "__main__":
    main()
