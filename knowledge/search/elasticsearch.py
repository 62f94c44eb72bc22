"""Search over Elasticsearch (`SEARCH_BACKEND=elasticsearch`): BM25 keyword search and kNN vector search.

Tenant isolation: each knowledge base of each tenant has an index of its own, named
`<ELASTICSEARCH_INDEX_PREFIX>-<schema>-kb-<knowledge base id>` (see `index_name`), and every request names
exactly one such index (never a wildcard, alias or list), so a search cannot reach another tenant's chunks:
knowledge base ids repeat across schemas, but the schema is part of the name. Writes take the schema from
the connection (the tenant django-tenants has set) and refuse the public schema; searches take it from the
`SearchRequest`. Platform schema names are lowercase slugs, so sanitising keeps names one-to-one.

PostgreSQL stays the source of truth: an index holds only what search needs and can be rebuilt from the
chunks at any time, which is why vectors are left out of `_source`. Hits carry chunk ids (the document
`_id`) and scores; vector scores are turned back into cosine similarity and the two lists are fused here
with `knowledge.search.fusion.fuse`, not by Elasticsearch's RRF retriever, so scores mean the same as with
the PostgreSQL backend and no licence tier is needed.

The request bodies (top-level `knn` in `_search`/`_msearch`) suit Elasticsearch 8.4+ and 9.x; the pinned
9.x Python client itself talks only to 9.x servers.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection
from django_tenants.utils import get_public_schema_name
from elasticsearch import ApiError, Elasticsearch, NotFoundError, TransportError
from elasticsearch.dsl import Mapping as IndexMapping
from elasticsearch.dsl import field as es_field
from elasticsearch.helpers import BulkIndexError, bulk

from knowledge.search.base import SearchOutcome, SearchRequest
from knowledge.search.fusion import fuse
from nexent_site.errors import ApplicationError

if TYPE_CHECKING:
    from knowledge.models import Chunk, KnowledgeBase

HEALTH_TIMEOUT_S = 2.0
# Elasticsearch refuses num_candidates above 10,000 and, by default, results past index.max_result_window.
MAX_CANDIDATES = 10_000
MIN_NUM_CANDIDATES = 100
KEYWORD_MODES = ("hybrid", "keyword")
VECTOR_MODES = ("hybrid", "semantic")
_UNSAFE_NAME_CHARS = re.compile(r"[^a-z0-9_-]")


class ElasticsearchBackendError(ApplicationError):
    """Elasticsearch failed or refused a request. The message names the server (URL without credentials)
    and the reason; it never contains the API key."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="search_unavailable", status=503)


@dataclass(frozen=True)
class ElasticsearchConfig:
    url: str
    api_key: str = field(default="", repr=False)
    index_prefix: str = "nexent"
    timeout_s: float = 10.0
    replicas: int = 0

    @classmethod
    def from_settings(cls) -> ElasticsearchConfig:
        url = getattr(settings, "ELASTICSEARCH_URL", "") or ""
        if not url:
            raise ImproperlyConfigured("SEARCH_BACKEND=elasticsearch needs ELASTICSEARCH_URL.")
        return cls(
            url=url,
            api_key=getattr(settings, "ELASTICSEARCH_API_KEY", "") or "",
            index_prefix=getattr(settings, "ELASTICSEARCH_INDEX_PREFIX", "nexent") or "nexent",
            timeout_s=float(getattr(settings, "ELASTICSEARCH_TIMEOUT_S", 10)),
            replicas=int(getattr(settings, "ELASTICSEARCH_REPLICAS", 0)),
        )

    @property
    def display_url(self) -> str:
        """The URL without any user:password part, for messages."""
        parts = urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


_clients: dict[tuple[Any, ...], Elasticsearch] = {}
_clients_lock = threading.Lock()


def _client(config: ElasticsearchConfig) -> Elasticsearch:
    # Keyed by process id because a pool inherited across a fork (Celery's prefork workers) would share
    # sockets with the parent; keyed by config so overridden settings (tests) get their own client.
    key = (os.getpid(), config.url, config.api_key, config.timeout_s)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = Elasticsearch(
                config.url,
                api_key=config.api_key or None,
                request_timeout=config.timeout_s,
                retry_on_timeout=True,
                max_retries=2,
            )
            _clients[key] = client
    return client


# Pure request building and response parsing: unit-tested without a server.


def index_name(schema: str, knowledge_base_id: int, *, prefix: str = "nexent") -> str:
    """The one index holding a tenant's knowledge base; Elasticsearch index names must be lowercase."""
    return _UNSAFE_NAME_CHARS.sub("-", f"{prefix}-{schema}-kb-{knowledge_base_id}".lower())


def index_mapping(dimension: int) -> dict[str, Any]:
    mapping = IndexMapping()
    # Strict: a misspelt field fails the bulk request instead of silently growing a dynamic mapping.
    mapping.meta("dynamic", "strict")
    mapping.meta("_source", {"excludes": ["embedding"]})
    mapping.field("chunk_id", es_field.Long())
    mapping.field("document_id", es_field.Long())
    mapping.field("generation", es_field.Integer())
    mapping.field("page", es_field.Integer())
    mapping.field("heading_path", es_field.Text(fields={"keyword": es_field.Keyword(ignore_above=512)}))
    mapping.field("text", es_field.Text(analyzer="standard"))
    mapping.field("embedding", es_field.DenseVector(dims=dimension, index=True, similarity="cosine"))
    return mapping.to_dict()


def index_body(dimension: int, *, replicas: int = 0) -> dict[str, Any]:
    """`settings` and `mappings` for `indices.create`: one shard, since a knowledge base is small."""
    return {
        "settings": {"number_of_shards": 1, "number_of_replicas": replicas},
        "mappings": index_mapping(dimension),
    }


def chunk_document(chunk: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "chunk_id": chunk.id,
        "document_id": chunk.document_id,
        "generation": chunk.generation,
        "page": chunk.page,
        "heading_path": chunk.heading_path or "",
        "text": chunk.text,
    }
    if chunk.embedding is not None:
        document["embedding"] = [float(value) for value in chunk.embedding]
    return document


def prune_query(document_id: int, keep_generation: int | None) -> dict[str, Any]:
    query: dict[str, Any] = {"bool": {"filter": [{"term": {"document_id": document_id}}]}}
    if keep_generation is not None:
        query["bool"]["must_not"] = [{"term": {"generation": keep_generation}}]
    return query


def _candidates(request: SearchRequest) -> int:
    return max(1, min(request.candidates, MAX_CANDIDATES))


def keyword_query_body(request: SearchRequest) -> dict[str, Any]:
    return {
        "query": {"match": {"text": {"query": request.query, "operator": "or"}}},
        "size": _candidates(request),
        "_source": False,
        "track_total_hits": False,
    }


def vector_query_body(request: SearchRequest) -> dict[str, Any]:
    if request.query_vector is None:
        raise ValueError("A vector search needs request.query_vector.")
    candidates = _candidates(request)
    return {
        "knn": {
            "field": "embedding",
            "query_vector": [float(value) for value in request.query_vector],
            "k": candidates,
            "num_candidates": min(MAX_CANDIDATES, max(MIN_NUM_CANDIDATES, 2 * candidates)),
        },
        "size": candidates,
        "_source": False,
        "track_total_hits": False,
    }


def search_mode_resolve(request: SearchRequest) -> tuple[str, list[str]]:
    """The mode to run and any warnings: without a query vector only keyword search is possible."""
    if request.mode not in KEYWORD_MODES + VECTOR_MODES:
        raise ValueError(f"Unknown search mode {request.mode!r}.")
    if request.mode in VECTOR_MODES and request.query_vector is None:
        return "keyword", [f"No query embedding was available, so {request.mode} search fell back to keyword search."]
    return request.mode, []


def search_bodies(request: SearchRequest, mode: str) -> list[dict[str, Any]]:
    """The searches to run for `mode`, keyword first; `outcome_from_responses` reads them in this order."""
    bodies = []
    if mode in KEYWORD_MODES:
        bodies.append(keyword_query_body(request))
    if mode in VECTOR_MODES:
        bodies.append(vector_query_body(request))
    return bodies


def cosine_from_score(score: float) -> float:
    """Elasticsearch scores cosine kNN hits as (1 + cos) / 2; the fusion expects the cosine itself."""
    return max(-1.0, min(1.0, 2 * score - 1))


def response_error(response: Mapping[str, Any]) -> str | None:
    """The reason an `_msearch` item failed, or None when it succeeded or its index does not exist yet
    (a knowledge base with nothing indexed simply has no hits)."""
    error = response.get("error")
    if not error:
        return None
    if isinstance(error, Mapping):
        if error.get("type") == "index_not_found_exception":
            return None
        return f"{error.get('type', 'error')}: {error.get('reason', '')}".strip()
    return str(error)


def response_hits(response: Mapping[str, Any]) -> list[tuple[int, float]]:
    """(chunk id, score) pairs, best first; an item without hits (say, a missing index) gives none."""
    hits = (response.get("hits") or {}).get("hits") or []
    return [(int(hit["_id"]), float(hit["_score"] or 0.0)) for hit in hits]


def outcome_from_responses(
    request: SearchRequest, mode: str, responses: list[Mapping[str, Any]], warnings: list[str]
) -> SearchOutcome:
    remaining = iter(responses)
    keyword = response_hits(next(remaining)) if mode in KEYWORD_MODES else []
    vector = []
    if mode in VECTOR_MODES:
        vector = [(chunk_id, cosine_from_score(score)) for chunk_id, score in response_hits(next(remaining))]
    fused = fuse(keyword, vector, fusion=request.fusion, keyword_weight=request.keyword_weight)
    return SearchOutcome(hits=fused[: request.candidates], mode=mode, warnings=list(warnings))


# The backend.


def _tenant_schema() -> str:
    schema = connection.schema_name
    if schema == get_public_schema_name():
        # Knowledge bases live in tenant schemas; indexing from the public schema would file a tenant's
        # chunks under the wrong name.
        raise RuntimeError("Elasticsearch indexing needs a tenant schema; set the tenant (tenant_context) first.")
    return schema


def _api_error_reason(exc: ApiError) -> str:
    reason = f"HTTP {exc.status_code} {exc.error}"
    body = exc.body if isinstance(exc.body, Mapping) else {}
    error = body.get("error")
    if isinstance(error, Mapping) and error.get("reason"):
        reason += f": {error['reason']}"
    if exc.status_code in (401, 403):
        reason += " (check ELASTICSEARCH_API_KEY)"
    elif exc.error == "media_type_header_exception":
        reason += " (the elasticsearch 9.x Python client needs an Elasticsearch 9.x server)"
    return reason


@contextmanager
def _translated_errors(config: ElasticsearchConfig, action: str) -> Iterator[None]:
    """Raise `ElasticsearchBackendError` naming the server and what failed, for any client error."""
    try:
        yield
    except BulkIndexError as exc:
        first = exc.errors[0] if exc.errors else {}
        item = next(iter(first.values()), {}) if isinstance(first, Mapping) else {}
        error = item.get("error") if isinstance(item, Mapping) else None
        detail = f"{error.get('type')}: {error.get('reason')}" if isinstance(error, Mapping) else str(error)
        raise _backend_error(config, action, f"{len(exc.errors)} chunk(s) rejected; first: {detail}") from exc
    except ApiError as exc:
        raise _backend_error(config, action, _api_error_reason(exc)) from exc
    except TransportError as exc:
        raise _backend_error(config, action, f"{type(exc).__name__}: {exc.message}") from exc


def _backend_error(config: ElasticsearchConfig, action: str, reason: str) -> ElasticsearchBackendError:
    if config.api_key:
        reason = reason.replace(config.api_key, "***")
    return ElasticsearchBackendError(f"Elasticsearch at {config.display_url} could not {action}: {reason[:500]}")


class ElasticsearchBackend:
    name = "elasticsearch"

    def vector_available(self) -> bool:
        return True

    def _index(self, config: ElasticsearchConfig, knowledge_base_id: int, schema: str | None = None) -> str:
        return index_name(schema or _tenant_schema(), knowledge_base_id, prefix=config.index_prefix)

    def _index_ensure(self, config: ElasticsearchConfig, kb: KnowledgeBase) -> None:
        name = self._index(config, kb.id)
        with _translated_errors(config, f"create index {name}"):
            try:
                _client(config).indices.create(
                    index=name, **index_body(kb.embedding_dimension, replicas=config.replicas)
                )
            except ApiError as exc:
                if exc.error != "resource_already_exists_exception":
                    raise

    def knowledge_base_prepare(self, kb: KnowledgeBase) -> None:
        """Create the knowledge base's index unless it exists (an existing mapping is left as it is)."""
        self._index_ensure(ElasticsearchConfig.from_settings(), kb)

    def knowledge_base_drop(self, kb: KnowledgeBase) -> None:
        """Delete the knowledge base's index; a missing index is not an error."""
        config = ElasticsearchConfig.from_settings()
        name = self._index(config, kb.id)
        with _translated_errors(config, f"delete index {name}"), suppress(NotFoundError):
            _client(config).indices.delete(index=name)

    def chunks_index(self, kb: KnowledgeBase, chunks: list[Chunk]) -> None:
        """Index the chunks under their ids (so re-indexing replaces them); searchable on return."""
        if not chunks:
            return
        config = ElasticsearchConfig.from_settings()
        # Without the index, bulk would auto-create one with a dynamic mapping where `embedding` is a plain
        # float array and kNN fails; creating it first costs one request per batch.
        self._index_ensure(config, kb)
        name = self._index(config, kb.id)
        client = _client(config)
        actions = (
            {"_op_type": "index", "_index": name, "_id": str(chunk.id), "_source": chunk_document(chunk)}
            for chunk in chunks
        )
        with _translated_errors(config, f"index {len(chunks)} chunk(s) into {name}"):
            # One refresh at the end instead of per request: the document is marked ready after this
            # returns, and its chunks must be searchable by then.
            bulk(client, actions, refresh=False, raise_on_error=True)
            client.indices.refresh(index=name)

    def document_prune(self, kb: KnowledgeBase, document_id: int, keep_generation: int | None) -> None:
        """Delete the document's chunks other than `keep_generation`'s (all when None); visible on return."""
        config = ElasticsearchConfig.from_settings()
        name = self._index(config, kb.id)
        with _translated_errors(config, f"prune document {document_id} in {name}"), suppress(NotFoundError):
            _client(config).delete_by_query(
                index=name, query=prune_query(document_id, keep_generation), conflicts="proceed", refresh=True
            )

    def search(self, request: SearchRequest) -> SearchOutcome:
        """Up to `request.candidates` fused hits from the request's tenant and knowledge base index; a
        knowledge base with no index yet has no hits."""
        config = ElasticsearchConfig.from_settings()
        mode, warnings = search_mode_resolve(request)
        name = self._index(config, request.knowledge_base_id, schema=request.schema_name)
        searches: list[dict[str, Any]] = []
        for body in search_bodies(request, mode):
            searches += [{}, body]  # an empty header: the index comes from the path
        with _translated_errors(config, f"search {name}"):
            responses = _client(config).msearch(index=name, searches=searches)["responses"]
        for response in responses:
            reason = response_error(response)
            if reason:
                raise _backend_error(config, f"search {name}", reason)
        return outcome_from_responses(request, mode, responses, warnings)

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = {"ok": False, "backend": self.name, "vector": True, "version": None, "error": None}
        try:
            config = ElasticsearchConfig.from_settings()
            with _translated_errors(config, "answer"):
                info = _client(config).options(request_timeout=HEALTH_TIMEOUT_S, max_retries=0).info()
            result.update(ok=True, version=info["version"]["number"])
        except Exception as exc:  # a health check reports failures; it never raises
            result["error"] = str(exc)[:300]
        return result
