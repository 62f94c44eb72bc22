"""Per-process caches of database lookups, valid while a token in Redis is unchanged.

Whoever changes the data behind a cache replaces its token (`TokenCache.changed`), and every process sees the
change at its next lookup: one Redis GET instead of a query. The token is read *before* the data is loaded, so a
change that commits in between only costs a reload next time, never a stale entry. A missing token (first use,
or Redis flushed) is replaced by a new one, so nothing cached before counts. Without Redis nothing is cached.

A caller that knows which tokens its thread is about to look up reads them in one round trip (`tokens_prefetch`:
a task's start reads its tenant's and that tenant's providers' tokens together). A prefetched token is used once,
by the next lookup of its key in the same thread within `PREFETCH_VALID_S`: it is what that lookup would have read
a moment earlier, and a change committed in between is seen by the next lookup, as it would be anyway.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from redis.exceptions import RedisError

logger = logging.getLogger(__name__)
V = TypeVar("V")

PREFETCH_VALID_S = 1.0
_prefetched = threading.local()  # .tokens: {token key: token}, .until: monotonic deadline


def tokens_prefetch(token_keys: list[str]) -> None:
    """Read `token_keys`' tokens in one round trip, for the next lookup of each in this thread (see the module).
    Replaces what this thread had prefetched before; a missing token is left to its lookup (which makes one)."""
    from nexent_site.redis_pool import redis_client

    _prefetched.tokens = {}
    try:
        values = redis_client().mget(token_keys)
    except RedisError:
        return  # the lookups find Redis unavailable themselves
    _prefetched.tokens = {key: token for key, token in zip(token_keys, values, strict=True) if token is not None}
    _prefetched.until = time.monotonic() + PREFETCH_VALID_S


def tokens_prefetched_forget() -> None:
    """Drop what this thread prefetched and did not use (at the end of a task)."""
    _prefetched.tokens = {}


def _prefetched_token(token_key: str) -> bytes | None:
    tokens = getattr(_prefetched, "tokens", None)
    if not tokens:
        return None
    token = tokens.pop(token_key, None)
    return token if token is not None and time.monotonic() < _prefetched.until else None


class TokenCache(Generic[V]):
    def __init__(self, name: str, max_entries: int = 10_000) -> None:
        self.name = name
        self.max_entries = max_entries
        self._entries: dict[Hashable, tuple[bytes, V]] = {}
        self._lock = threading.Lock()

    def token(self, token_key: str) -> bytes | None:
        from nexent_site.redis_pool import redis_client

        prefetched = _prefetched_token(token_key)
        if prefetched is not None:
            return prefetched
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

    def peek(self, key: Hashable) -> V | None:
        """The value cached for `key`, whether or not its token still holds (to know which tokens to prefetch)."""
        cached = self._entries.get(key)
        return cached[1] if cached is not None else None

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
