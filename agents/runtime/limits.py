"""Provider concurrency: at most `max_concurrency` runs use a provider at once, across every worker.

Holders live in a Redis sorted set scored by their expiry, so a slot held by a worker that died frees
itself; the check-and-take is one Lua script, so two workers never take the last slot together.

Priorities: a holder that someone waits for (a search's query embedding) says so while it waits, and holders
that give way (an ingestion's batches) take no slot meanwhile. Without it, a search polling for a slot of a
provider busy with a bulk upload found the slots taken again each time: the ingestion threads take the next
batch's slot as soon as they have written the last one, and a query waited for many batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, ARGV[1])
local held = redis.call('ZSCORE', KEYS[1], ARGV[4])
if not held and ARGV[6] == 'low' and redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
if held or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 1
end
if ARGV[6] == 'high' then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[7])
end
return 0
"""


# several slots of one holder (a run's: its tenant's and its providers'), all or none, in one round trip: the index
# (from 1) of the first key with no free slot, else 0 with every slot taken
_TAKE_ALL = """
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, 0, ARGV[1])
  if not redis.call('ZSCORE', key, ARGV[3]) and redis.call('ZCARD', key) >= tonumber(ARGV[4 + i]) then
    return i
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[2], ARGV[3])
  redis.call('EXPIRE', key, ARGV[4])
end
return 0
"""


def provider_slots_key(schema_name: str, provider_key: str) -> str:
    return f"nexent:{schema_name}:provider:{provider_key}:slots"


def tenant_runs_slots_key(schema_name: str) -> str:
    return f"nexent:{schema_name}:runs:slots"


class ProviderSlot:
    """One holder's slot among `limit` under `key`. `priority`: NORMAL; HIGH, which says it is waiting while it
    does, so that LOW holders take no slot until it has one (or stopped waiting: the mark expires)."""

    LOW, NORMAL, HIGH = "low", "normal", "high"

    def __init__(
        self, client: redis.Redis, key: str, limit: int, holder: str, ttl_s: int, priority: str = NORMAL
    ) -> None:
        self.client, self.key, self.limit, self.holder, self.ttl_s = client, key, limit, holder, ttl_s
        self.priority = priority
        self._take = client.register_script(_TAKE)

    def try_acquire(self, *, waiting_mark_s: float = 1.0) -> bool:
        """Take a slot if one is free (and, for a LOW holder, if no HIGH one waits). A HIGH holder refused marks
        the key as waited for, for `waiting_mark_s`."""
        now = time.time()
        return bool(
            self._take(
                keys=[self.key, f"{self.key}:waiting"],
                args=[
                    now,
                    self.limit,
                    now + self.ttl_s,
                    self.holder,
                    self.ttl_s + 60,
                    self.priority,
                    max(1, int(waiting_mark_s * 1000)),
                ],
            )
        )

    def acquire(self, *, check: Callable[[], None], poll_s: float = 0.2) -> float:
        """Wait for a slot; `check` may raise to give up (cancelled, timed out). Returns seconds waited. A HIGH
        holder's mark that it waits outlives a few polls, not more: once it has its slot, LOW holders go on."""
        started = time.monotonic()
        while not self.try_acquire(waiting_mark_s=3 * poll_s):
            check()
            time.sleep(poll_s)
        return time.monotonic() - started

    def release(self) -> None:
        self.client.zrem(self.key, self.holder)


def slots_try_acquire_all(slots: list[ProviderSlot]) -> ProviderSlot | None:
    """Take every one of `slots` (NORMAL ones, of one holder, on one Redis, with one TTL), or none: the first slot
    found with none free is returned then. One round trip, where taking them one by one (and giving back the ones
    taken when one is full) took one each."""
    if not slots:
        return None
    first, now = slots[0], time.time()
    full = first.client.register_script(_TAKE_ALL)(
        keys=[slot.key for slot in slots],
        args=[now, now + first.ttl_s, first.holder, first.ttl_s + 60, *(slot.limit for slot in slots)],
    )
    return slots[full - 1] if full else None
