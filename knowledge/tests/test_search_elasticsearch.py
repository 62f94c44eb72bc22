"""The Elasticsearch backend: request bodies and response handling without a server, then the whole cycle
against a real one when `ELASTICSEARCH_URL` is set (say, `docker run -p 9200:9200 -e discovery.type=single-node
-e xpack.security.enabled=false elasticsearch:9.1.0`)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from django.test import override_settings
from django_tenants.utils import schema_context

from knowledge.search.base import SearchRequest
from knowledge.search.elasticsearch import (
    ElasticsearchBackend,
    ElasticsearchBackendError,
    ElasticsearchConfig,
    chunk_document,
    cosine_from_score,
    index_body,
    index_mapping,
    index_name,
    keyword_query_body,
    outcome_from_responses,
    prune_query,
    response_error,
    search_bodies,
    search_mode_resolve,
    vector_query_body,
)
from knowledge.search.fusion import fuse

ES_URL = os.environ.get("ELASTICSEARCH_URL", "")


def make_request(**overrides: Any) -> SearchRequest:
    values: dict[str, Any] = {
        "schema_name": "alpha",
        "knowledge_base_id": 7,
        "dimension": 3,
        "query": "refund policy",
        "query_vector": [0.1, 0.2, 0.3],
        "mode": "hybrid",
        "top_k": 5,
        "candidates": 20,
    }
    values.update(overrides)
    return SearchRequest(**values)


def es_response(*hits: tuple[int, float]) -> dict[str, Any]:
    return {"took": 1, "status": 200, "hits": {"hits": [{"_id": str(cid), "_score": score} for cid, score in hits]}}


# Index names and mappings


def test_index_names_are_per_tenant_and_knowledge_base() -> None:
    # when
    alpha, beta = index_name("alpha", 7), index_name("beta", 7)

    # then
    assert alpha == "nexent-alpha-kb-7"
    assert beta == "nexent-beta-kb-7"
    assert index_name("alpha", 8) != alpha


def test_index_names_are_lowercase_and_sanitised() -> None:
    assert index_name("Acme.Corp", 3, prefix="Prod") == "prod-acme-corp-kb-3"
    assert index_name("a/b*c", 1) == "nexent-a-b-c-kb-1"


def test_mapping_has_the_vector_text_and_id_fields() -> None:
    # when
    properties = index_mapping(768)["properties"]

    # then
    assert properties["embedding"] == {"type": "dense_vector", "dims": 768, "index": True, "similarity": "cosine"}
    assert properties["text"] == {"type": "text", "analyzer": "standard"}
    assert properties["heading_path"]["type"] == "text"
    assert properties["heading_path"]["fields"]["keyword"]["type"] == "keyword"
    assert properties["chunk_id"]["type"] == properties["document_id"]["type"] == "long"
    assert properties["generation"]["type"] == properties["page"]["type"] == "integer"


def test_index_body_has_one_shard_and_the_configured_replicas() -> None:
    assert index_body(3)["settings"] == {"number_of_shards": 1, "number_of_replicas": 0}
    assert index_body(3, replicas=2)["settings"]["number_of_replicas"] == 2
    assert index_body(3)["mappings"]["properties"]["embedding"]["dims"] == 3


def test_chunk_document_skips_a_missing_embedding() -> None:
    # given
    chunk = SimpleNamespace(id=5, document_id=2, generation=1, page=None, heading_path="", text="hi", embedding=None)

    # when
    document = chunk_document(chunk)

    # then
    assert document == {
        "chunk_id": 5,
        "document_id": 2,
        "generation": 1,
        "page": None,
        "heading_path": "",
        "text": "hi",
    }
    chunk.embedding = [1, 0, 0]
    assert chunk_document(chunk)["embedding"] == [1.0, 0.0, 0.0]


def test_prune_query_keeps_a_generation_or_removes_all() -> None:
    assert prune_query(4, 2) == {
        "bool": {"filter": [{"term": {"document_id": 4}}], "must_not": [{"term": {"generation": 2}}]}
    }
    assert prune_query(4, None) == {"bool": {"filter": [{"term": {"document_id": 4}}]}}


# Request bodies


def test_keyword_body_is_a_bm25_match_on_text() -> None:
    # when
    body = keyword_query_body(make_request(candidates=30))

    # then
    assert body["query"] == {"match": {"text": {"query": "refund policy", "operator": "or"}}}
    assert body["size"] == 30
    assert body["_source"] is False


def test_vector_body_is_a_knn_search_with_the_query_vector() -> None:
    # when
    body = vector_query_body(make_request(candidates=30))

    # then
    assert body["knn"] == {"field": "embedding", "query_vector": [0.1, 0.2, 0.3], "k": 30, "num_candidates": 100}
    assert body["size"] == 30
    assert "query" not in body


def test_vector_body_widens_num_candidates_for_many_candidates() -> None:
    assert vector_query_body(make_request(candidates=80))["knn"]["num_candidates"] == 160
    huge = vector_query_body(make_request(candidates=50_000))["knn"]
    assert huge["num_candidates"] == 10_000
    assert huge["k"] <= huge["num_candidates"]


def test_each_mode_runs_its_lists_keyword_first() -> None:
    hybrid = make_request(mode="hybrid")
    assert [set(body) & {"query", "knn"} for body in search_bodies(hybrid, "hybrid")] == [{"query"}, {"knn"}]
    assert ["query" in body for body in search_bodies(hybrid, "keyword")] == [True]
    assert ["knn" in body for body in search_bodies(hybrid, "semantic")] == [True]


def test_a_missing_query_vector_falls_back_to_keyword_with_a_warning() -> None:
    # when
    mode, warnings = search_mode_resolve(make_request(mode="hybrid", query_vector=None))

    # then
    assert mode == "keyword"
    assert len(warnings) == 1
    assert "keyword" in warnings[0]
    assert search_mode_resolve(make_request(mode="semantic")) == ("semantic", [])


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="fuzzy"):
        search_mode_resolve(make_request(mode="fuzzy"))


# Responses


def test_cosine_scores_are_converted_back_from_elasticsearch_scores() -> None:
    assert cosine_from_score(1.0) == 1.0
    assert cosine_from_score(0.5) == 0.0
    assert cosine_from_score(0.0) == -1.0
    assert cosine_from_score(0.95) == pytest.approx(0.9)


def test_hybrid_responses_are_fused_like_the_other_backends() -> None:
    # given
    request = make_request(fusion="weighted", keyword_weight=0.4)
    keyword = es_response((1, 7.5), (2, 3.0))
    vector = es_response((2, 0.95), (3, 0.8))

    # when
    outcome = outcome_from_responses(request, "hybrid", [keyword, vector], [])

    # then
    expected = fuse([(1, 7.5), (2, 3.0)], [(2, 0.9), (3, 0.6)], fusion="weighted", keyword_weight=0.4)
    assert [(hit.chunk_id, hit.score) for hit in outcome.hits] == [
        (hit.chunk_id, pytest.approx(hit.score)) for hit in expected
    ]
    by_id = {hit.chunk_id: hit for hit in outcome.hits}
    assert by_id[2].keyword_score == 3.0
    assert by_id[2].vector_score == pytest.approx(0.9)
    assert outcome.mode == "hybrid"


def test_semantic_responses_carry_cosine_similarity() -> None:
    # when
    outcome = outcome_from_responses(make_request(fusion="weighted"), "semantic", [es_response((4, 0.9))], [])

    # then
    assert outcome.hits[0].chunk_id == 4
    assert outcome.hits[0].vector_score == pytest.approx(0.8)
    assert outcome.hits[0].score == pytest.approx(0.8)


def test_hits_are_capped_at_the_candidates_and_warnings_kept() -> None:
    # given
    keyword = es_response(*[(n, float(10 - n)) for n in range(1, 9)])

    # when
    outcome = outcome_from_responses(make_request(candidates=3), "keyword", [keyword], ["fell back"])

    # then
    assert [hit.chunk_id for hit in outcome.hits] == [1, 2, 3]
    assert outcome.warnings == ["fell back"]


def test_a_missing_index_is_no_hits_but_other_errors_are_reported() -> None:
    # given
    missing = {"error": {"type": "index_not_found_exception", "reason": "no such index"}, "status": 404}
    broken = {"error": {"type": "search_phase_execution_exception", "reason": "all shards failed"}, "status": 400}

    # then
    assert response_error(missing) is None
    assert response_error(es_response((1, 1.0))) is None
    assert response_error(broken) == "search_phase_execution_exception: all shards failed"
    assert outcome_from_responses(make_request(), "hybrid", [missing, missing], []).hits == []


# Configuration and failures


def test_the_url_in_messages_has_no_credentials() -> None:
    config = ElasticsearchConfig(url="https://elastic:s3cret@es.example.com:9243/base", api_key="key-123")
    assert config.display_url == "https://es.example.com:9243/base"
    assert "key-123" not in repr(config)


def test_an_unreachable_server_raises_a_clear_error_and_health_reports_it() -> None:
    # given: a port nothing listens on
    backend = ElasticsearchBackend()
    url = "http://127.0.0.1:9"

    # when
    with override_settings(ELASTICSEARCH_URL=url, ELASTICSEARCH_API_KEY="top-secret", ELASTICSEARCH_TIMEOUT_S=2):
        with pytest.raises(ElasticsearchBackendError) as raised:
            backend.search(make_request())
        health = backend.health()

    # then
    assert str(raised.value).startswith(f"Elasticsearch at {url} could not search nexent-alpha-kb-7:")
    assert "top-secret" not in str(raised.value)
    assert raised.value.status == 503
    assert health["ok"] is False
    assert health["backend"] == "elasticsearch"
    assert url in health["error"]
    assert "top-secret" not in health["error"]


@override_settings(ELASTICSEARCH_URL="")
def test_health_without_a_url_reports_the_missing_setting() -> None:
    health = ElasticsearchBackend().health()
    assert health["ok"] is False
    assert "ELASTICSEARCH_URL" in health["error"]


def test_indexing_outside_a_tenant_schema_is_refused() -> None:
    kb = SimpleNamespace(id=1, embedding_dimension=3)
    with override_settings(ELASTICSEARCH_URL="http://127.0.0.1:9"), pytest.raises(RuntimeError, match="tenant"):
        ElasticsearchBackend().knowledge_base_prepare(kb)


# Against a real server


needs_server = pytest.mark.skipif(not ES_URL, reason="ELASTICSEARCH_URL is not set")


def make_chunk(chunk_id: int, document_id: int, generation: int, text: str, embedding: list[float]) -> Any:
    return SimpleNamespace(
        id=chunk_id,
        document_id=document_id,
        generation=generation,
        page=1,
        heading_path="Policies > Refunds",
        text=text,
        embedding=embedding,
    )


@pytest.fixture
def es_alpha() -> Iterator[tuple[ElasticsearchBackend, Any]]:
    """A prepared index for a knowledge base of tenant `alpha`, under a prefix of its own, dropped after."""
    backend = ElasticsearchBackend()
    kb = SimpleNamespace(id=7, embedding_dimension=3)
    prefix = f"nexent-test-{uuid.uuid4().hex[:8]}"
    with override_settings(ELASTICSEARCH_URL=ES_URL, ELASTICSEARCH_INDEX_PREFIX=prefix), schema_context("alpha"):
        backend.knowledge_base_prepare(kb)
        try:
            yield backend, kb
        finally:
            backend.knowledge_base_drop(kb)


@needs_server
def test_server_health() -> None:
    with override_settings(ELASTICSEARCH_URL=ES_URL):
        health = ElasticsearchBackend().health()
    assert health["ok"] is True, health
    assert health["version"]


@needs_server
def test_index_search_prune_and_isolation(es_alpha: tuple[ElasticsearchBackend, Any]) -> None:
    # given
    backend, kb = es_alpha
    backend.knowledge_base_prepare(kb)  # idempotent
    backend.chunks_index(
        kb,
        [
            make_chunk(101, 1, 1, "Refunds are issued within 14 days of purchase.", [1.0, 0.0, 0.0]),
            make_chunk(102, 1, 1, "Shipping takes three to five business days.", [0.0, 1.0, 0.0]),
            make_chunk(103, 2, 1, "Our office is closed on public holidays.", [0.0, 0.0, 1.0]),
        ],
    )
    backend.chunks_index(kb, [make_chunk(104, 1, 2, "Refunds now take 30 days.", [0.9, 0.1, 0.0])])

    # when
    hybrid = backend.search(make_request(query="refunds", query_vector=[1.0, 0.05, 0.0]))
    semantic = backend.search(make_request(mode="semantic", query_vector=[0.0, 0.0, 1.0], fusion="weighted"))
    fallback = backend.search(make_request(query="shipping", query_vector=None))

    # then
    assert hybrid.mode == "hybrid"
    assert hybrid.hits[0].chunk_id in (101, 104)
    assert {101, 104} <= {hit.chunk_id for hit in hybrid.hits}
    assert semantic.hits[0].chunk_id == 103
    assert semantic.hits[0].vector_score == pytest.approx(1.0, abs=0.02)
    assert (fallback.mode, fallback.hits[0].chunk_id, len(fallback.warnings)) == ("keyword", 102, 1)

    # when: generation 2 of document 1 replaced generation 1
    backend.document_prune(kb, 1, keep_generation=2)
    after = backend.search(make_request(query="refunds shipping", mode="keyword"))

    # then
    assert {hit.chunk_id for hit in after.hits} == {104}

    # when: the same knowledge base id in another tenant
    other = backend.search(make_request(schema_name="beta", query="refunds"))

    # then
    assert other.hits == []
    assert other.mode == "hybrid"


@needs_server
def test_dropped_and_missing_indexes_have_no_hits(es_alpha: tuple[ElasticsearchBackend, Any]) -> None:
    # given
    backend, kb = es_alpha
    backend.chunks_index(kb, [make_chunk(201, 9, 1, "Refunds policy", [1.0, 0.0, 0.0])])

    # when
    backend.knowledge_base_drop(kb)
    backend.knowledge_base_drop(kb)  # idempotent
    backend.document_prune(kb, 9, keep_generation=None)  # no index: nothing to do

    # then
    assert backend.search(make_request(query="refunds")).hits == []
