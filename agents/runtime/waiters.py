"""Runs waiting for a slot (agents.runtime.limits), in the order they began to wait, so that a run that frees a
slot starts the next one at once.

A run refused a slot stays queued and its task is tried again later, with a back-off (RunMustWait): that try is
the fallback, and a run that waited for it started up to several seconds after a slot had freed. Now the refused
run is also written down here under the slot's key; a run that ends pops the oldest waiter of each key it held
and sends that one's task again at once. Keys carry the tenant's schema, as the slots' own do.
"""

from __future__ import annotations

import json
import time
from typing import Any

from agents.runtime.streams import redis_client

WAITING_TTL_S = 24 * 3600

# ZPOPMIN the oldest waiter, then its task from the hash: one round trip, and no two enders wake the same run
_WAKE = """
local popped = redis.call('ZPOPMIN', KEYS[1])
if #popped == 0 then
  return nil
end
local task = redis.call('HGET', KEYS[2], popped[1])
redis.call('HDEL', KEYS[2], popped[1])
return task
"""


def _waiters_key(slots_key: str) -> str:
    return f"{slots_key}:waiters"


def _tasks_key(schema_name: str) -> str:
    return f"nexent:{schema_name}:runs:waiting"


def run_waiting_add(
    schema_name: str, slots_key: str, run_id: str, *, task: str, args: list[Any], since: float | None = None
) -> None:
    """`run_id` waits for a slot of `slots_key`; its task is sent again as `task(*args, woken=…)`. A run keeps its
    place: `since` (its first wait), else now."""
    since = since or time.time()
    payload = json.dumps({"task": task, "args": args, "slots_key": slots_key, "since": since})
    pipe = redis_client().pipeline(transaction=False)
    pipe.zadd(_waiters_key(slots_key), {run_id: since}, nx=True)
    pipe.expire(_waiters_key(slots_key), WAITING_TTL_S)
    pipe.hsetnx(_tasks_key(schema_name), run_id, payload)  # a later try keeps the first wait's time
    pipe.expire(_tasks_key(schema_name), WAITING_TTL_S)
    pipe.execute()


def run_waiting_remove(schema_name: str, run_id: str) -> None:
    """`run_id` waits no more (it started, or was cancelled)."""
    client = redis_client()
    payload = client.hget(_tasks_key(schema_name), run_id)
    if payload is None:
        return
    pipe = client.pipeline(transaction=False)
    pipe.zrem(_waiters_key(json.loads(payload)["slots_key"]), run_id)
    pipe.hdel(_tasks_key(schema_name), run_id)
    pipe.execute()


def run_waiting_next(schema_name: str, slots_key: str) -> dict | None:
    """The oldest waiter of `slots_key` (its task, args, key and first wait), taken off the list; None if none."""
    client = redis_client()
    payload = client.eval(_WAKE, 2, _waiters_key(slots_key), _tasks_key(schema_name))
    return json.loads(payload) if payload else None
