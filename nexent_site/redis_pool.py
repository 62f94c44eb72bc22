"""One Redis connection pool per process, for every synchronous Redis user (run events, limits, caches)."""

from __future__ import annotations

import os
import threading

import redis
from django.conf import settings

_pools: dict[tuple[int, str], redis.ConnectionPool] = {}
_pools_lock = threading.Lock()


def redis_client() -> redis.Redis:
    """A client on this process's shared connection pool (a new pool per use cost a TCP connect each time).
    Safe to use from several threads; `close()` returns connections to the pool."""
    key = (os.getpid(), settings.REDIS_URL)
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            pool = _pools[key] = redis.ConnectionPool.from_url(
                settings.REDIS_URL, socket_timeout=10, max_connections=500
            )
    return redis.Redis(connection_pool=pool)
