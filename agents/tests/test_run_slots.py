"""A run's slots (its tenant's runs and each limited provider's) against real Redis: taken all at once or none."""

from __future__ import annotations

import uuid

from agents.runtime.limits import ProviderSlot, provider_slots_key, slots_try_acquire_all, tenant_runs_slots_key
from nexent_site.redis_pool import redis_client


def test_a_run_takes_its_slots_all_at_once_or_none() -> None:
    """With the provider's one slot held by another run, the run gets none (the tenant's is not taken either, so
    nothing is held while it waits) and learns which one is full; once it is free, both; taken again by the same
    run (its task delivered twice), still one each."""
    client, schema = redis_client(), f"slots_{uuid.uuid4().hex[:8]}"
    keys = [tenant_runs_slots_key(schema), provider_slots_key(schema, "1")]

    def slots(holder: str) -> list[ProviderSlot]:
        return [
            ProviderSlot(client, key, limit, holder=holder, ttl_s=60) for key, limit in zip(keys, (5, 1), strict=True)
        ]

    try:
        other = slots("other run")[1]
        assert other.try_acquire()

        full = slots_try_acquire_all(slots("run"))

        assert full is not None and full.key == keys[1]
        assert client.zcard(keys[0]) == 0 and client.zscore(keys[1], "run") is None

        other.release()
        assert slots_try_acquire_all(slots("run")) is None
        assert slots_try_acquire_all(slots("run")) is None
        assert [client.zcard(key) for key in keys] == [1, 1]
        assert all(client.zscore(key, "run") is not None and client.ttl(key) > 0 for key in keys)
        assert slots_try_acquire_all([]) is None
    finally:
        client.delete(*keys)
