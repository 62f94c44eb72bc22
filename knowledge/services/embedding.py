"""Embedding passages and queries with a knowledge base's provider: batches, provider concurrency slots,
retries with backoff on overload or outage, and the knowledge base's fixed dimension enforced."""

from __future__ import annotations

import time
import uuid
from functools import partial
from typing import Any

from django.conf import settings
from django.db import connection

from agents.runtime.limits import ProviderSlot, provider_slots_key
from agents.runtime.streams import redis_client
from nexent_site.integrations.openai_compat import ProviderConfig, ProviderError, embed


def _config(kb: Any) -> ProviderConfig:
    config = ProviderConfig.from_provider(kb.embedding_provider)
    # The knowledge base's dimension is what its index holds: a provider answering otherwise is refused.
    return ProviderConfig(**{**config.__dict__, "dimension": kb.embedding_dimension})


def _with_slot(config: ProviderConfig, call: Any, *, priority: str, poll_s: float) -> Any:
    if not config.max_concurrency or config.provider_id is None:
        return call()
    slot = ProviderSlot(
        redis_client(),
        provider_slots_key(connection.schema_name, str(config.provider_id)),
        config.max_concurrency,
        holder=uuid.uuid4().hex,
        ttl_s=int(config.timeout_s) + 30,
        priority=priority,
    )
    slot.acquire(check=lambda: None, poll_s=poll_s)
    try:
        return call()
    finally:
        slot.release()


def embed_passages(kb: Any, texts: list[str]) -> list[list[float]]:
    """Embeddings of document passages, in order. Transient provider failures (429, 5xx, timeouts,
    connection errors) are retried KNOWLEDGE_EMBED_RETRIES times with exponential backoff; then, and for
    anything else (bad key, wrong dimension), ProviderError."""
    config = _config(kb)
    delay = settings.KNOWLEDGE_EMBED_BACKOFF_S
    for attempt in range(settings.KNOWLEDGE_EMBED_RETRIES + 1):
        try:
            # a document's batches give way to searches waiting for the provider (agents.runtime.limits)
            batch = partial(embed, config, texts, input_type="passage")
            return _with_slot(config, batch, priority=ProviderSlot.LOW, poll_s=0.2)
        except ProviderError as exc:
            if not exc.transient or attempt == settings.KNOWLEDGE_EMBED_RETRIES:
                raise
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def embed_query(kb: Any, query: str) -> list[float]:
    config = _config(kb)
    call = partial(embed, config, [query], input_type="query")
    return _with_slot(config, call, priority=ProviderSlot.HIGH, poll_s=0.05)[0]
