"""Django's ASGI handler, with the whole middleware chain and sync views run in one thread per request, and a
bound on how many requests run Python code at once.

- For ASGI, Django builds the middleware chain in async mode. Ours has sync-only middleware in it
  (django-tenants' TenantMainMiddleware, WhiteNoise, the health and suspension checks), so each request
  switched between the event loop and the request's thread twice for every async-capable middleware below
  them: about fifteen switches per request. On two vCPUs that was most of a simple API request's cost
  (`/api/v1/me/`: 18.8 ms of CPU per request, about 9 ms with this handler). Here the chain is built sync
  and entered once.
- Django gives every request a thread of its own (asgiref's per-request ThreadSensitiveContext), so
  `ASGI_THREADS` does not bound them: under a burst, hundreds of threads fought over the GIL and the CPU
  cost per request doubled (23.6 ms at 16 requests in flight, 41.4 ms at 200), which turned an overload
  into a collapse. `WEB_REQUEST_CONCURRENCY` requests per process run at once; the others wait on the event
  loop, costing nothing.
- Async views (the OpenAI-compatible endpoint under /v1/, which waits for whole runs) are awaited on the
  event loop from their request's thread, as before, and do not take one of those places, so slow answers
  never hold up other requests. Streamed responses are sent by the event loop after the chain returned.
"""

from __future__ import annotations

import asyncio

import django
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest, HttpResponseBase

UNBOUNDED_PREFIXES = ("/v1/",)


class SyncChainASGIHandler(ASGIHandler):
    def __init__(self) -> None:
        super().__init__()
        self._places = asyncio.Semaphore(settings.WEB_REQUEST_CONCURRENCY)

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        # Entered from ASGIHandler.get_response_async inside the request's ThreadSensitiveContext: one thread
        # per request, the same one Django would have used for the sync parts.
        self._middleware_chain = sync_to_async(self._middleware_chain, thread_sensitive=True)

    async def get_response_async(self, request: HttpRequest) -> HttpResponseBase:
        if request.path.startswith(UNBOUNDED_PREFIXES):
            return await super().get_response_async(request)
        async with self._places:
            return await super().get_response_async(request)


def get_asgi_application() -> SyncChainASGIHandler:
    django.setup(set_prefix=False)
    return SyncChainASGIHandler()
