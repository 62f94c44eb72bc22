"""Provider concurrency: at most `max_concurrency` runs use a provider at once, across every worker.

Holders live in a Redis sorted set scored by their expiry, so a slot held by a worker that died frees
itself; the check-and-take is one Lua script, so two workers never take the last slot together.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"""


def provider_slots_key(schema_name: str, provider_key: str) -> str:
    return f"nexent:{schema_name}:provider:{provider_key}:slots"


def tenant_runs_slots_key(schema_name: str) -> str:
    return f"nexent:{schema_name}:runs:slots"


class ProviderSlot:
    def __init__(self, client: redis.Redis, key: str, limit: int, holder: str, ttl_s: int) -> None:
        self.client, self.key, self.limit, self.holder, self.ttl_s = client, key, limit, holder, ttl_s
        self._take = client.register_script(_TAKE)

    def try_acquire(self) -> bool:
        now = time.time()
        return bool(self._take(keys=[self.key], args=[now, self.limit, now + self.ttl_s, self.holder, self.ttl_s + 60]))

    def acquire(self, *, check: Callable[[], None], poll_s: float = 0.2) -> float:
        """Wait for a slot; `check` may raise to give up (cancelled, timed out). Returns seconds waited."""
        started = time.monotonic()
        while not self.try_acquire():
            check()
            time.sleep(poll_s)
        return time.monotonic() - started

    def release(self) -> None:
        self.client.zrem(self.key, self.holder)
