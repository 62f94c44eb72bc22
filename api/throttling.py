"""Requests per minute, per API key and per tenant, counted in Redis so that every web process shares the
same counts. Fixed one-minute windows: one INCR per limit, in one round trip."""

from __future__ import annotations

import time
from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from agents.runtime.streams import redis_client
from api.models import ApiKey
from nexent_site.tenancy import tenant_redis_scope

WINDOW_S = 60


def rate_limits_for(tenant: Any, api_key: ApiKey | None) -> list[tuple[str, int]]:
    """(counter name, limit) pairs that apply to a request; a limit of 0 is no limit."""
    limits = [("tenant", getattr(tenant, "api_requests_per_minute", 0) or 0)]
    if api_key is not None:
        limits.append((f"key{api_key.pk}", api_key.requests_per_minute or 0))
    return [(name, limit) for name, limit in limits if limit]


def rate_limit_hit(tenant: Any, api_key: ApiKey | None, now: float | None = None) -> int | None:
    """Count one request. None when it is within every limit, else the seconds until the window ends."""
    limits = rate_limits_for(tenant, api_key)
    if not limits:
        return None
    now = time.time() if now is None else now
    window = int(now // WINDOW_S)
    keys = [f"ratelimit:{tenant_redis_scope(tenant)}:{name}:{window}" for name, _ in limits]
    client = redis_client()
    try:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.set(key, 0, ex=WINDOW_S + 5, nx=True)  # (EXPIRE … NX needs Redis 7; the embedded one is 6.2)
            pipe.incr(key)
        counts = pipe.execute()[1::2]
    finally:
        client.close()
    if any(count > limit for count, (_, limit) in zip(counts, limits, strict=True)):
        return max(1, int((window + 1) * WINDOW_S - now + 0.999))
    return None


class RequestRateThrottle(BaseThrottle):
    """DRF answers a refused request with 429 and `Retry-After`."""

    def allow_request(self, request: Request, view: Any) -> bool:
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        self._wait = rate_limit_hit(getattr(request, "tenant", None), api_key)
        return self._wait is None

    def wait(self) -> float | None:
        return self._wait
