"""Per-process caches of database lookups, valid while a token in Redis is unchanged.

Whoever changes the data behind a cache replaces its token (`TokenCache.changed`), and every process sees the
change at its next lookup: one Redis GET instead of a query. The token is read *before* the data is loaded, so a
change that commits in between only costs a reload next time, never a stale entry. A missing token (first use,
or Redis flushed) is replaced by a new one, so nothing cached before counts. Without Redis nothing is cached.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from redis.exceptions import RedisError

logger = logging.getLogger(__name__)
V = TypeVar("V")


class TokenCache(Generic[V]):
    def __init__(self, name: str, max_entries: int = 10_000) -> None:
        self.name = name
        self.max_entries = max_entries
        self._entries: dict[Hashable, tuple[bytes, V]] = {}
        self._lock = threading.Lock()

    def token(self, token_key: str) -> bytes | None:
        from nexent_site.redis_pool import redis_client

        try:
            client = redis_client()
            token = client.get(token_key)
            if token is None:
                client.set(token_key, uuid.uuid4().hex, nx=True)
                token = client.get(token_key)
            return token
        except RedisError:
            logger.warning("Redis unavailable: %s looked up without the cache", self.name)
            return None

    def get(self, token_key: str, key: Hashable, load: Callable[[], V]) -> V:
        """The cached value of `key` while `token_key`'s token is unchanged, else `load()` (cached then)."""
        token = self.token(token_key)
        cached = self._entries.get(key) if token is not None else None
        if cached is not None and cached[0] == token:
            return cached[1]
        value = load()
        if token is not None:
            with self._lock:
                if len(self._entries) >= self.max_entries:
                    self._entries.clear()
                self._entries[key] = (token, value)
        return value

    def forget_local(self) -> None:
        """Drop this process's entries (tests: rows of a rolled-back transaction change no token)."""
        with self._lock:
            self._entries.clear()

    def changed(self, token_key: str) -> None:
        """The data behind `token_key` changed: every process loads it again at its next lookup."""
        from nexent_site.redis_pool import redis_client

        self.forget_local()
        try:
            redis_client().set(token_key, uuid.uuid4().hex)
        except RedisError:
            logger.warning("Redis unavailable: other processes keep their %s until it is back", self.name)
