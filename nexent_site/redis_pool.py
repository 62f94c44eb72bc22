"""One Redis connection pool per process, for every synchronous Redis user (run events, limits, caches)."""

from __future__ import annotations

import os
import threading

import redis
from django.conf import settings

_clients: dict[tuple[int, str], redis.Redis] = {}
_clients_lock = threading.Lock()


def redis_client() -> redis.Redis:
    """This process's client, on one shared connection pool (a new pool per use cost a TCP connect each
    time, and a new client object per call showed up in request profiles). Thread-safe: every command takes
    a connection from the pool and gives it back. `close()` is harmless: it leaves the shared pool open."""
    key = (os.getpid(), settings.REDIS_URL)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                pool = redis.ConnectionPool.from_url(settings.REDIS_URL, socket_timeout=10, max_connections=500)
                client = _clients[key] = redis.Redis(connection_pool=pool)
    return client
