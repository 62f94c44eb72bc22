"""Django's ASGI handler, with the whole middleware chain and sync views run in one thread per request.

For ASGI, Django builds the middleware chain in async mode. Ours has sync-only middleware in it (django-tenants'
TenantMainMiddleware, WhiteNoise, the health and suspension checks), so each request switched between the
event loop and the request's thread twice for every async-capable middleware below them: about fifteen
switches per request. On two vCPUs that was most of a simple API request's cost (`/api/v1/me/`: 18.8 ms of
CPU per request, 7.5 ms with this handler; README, bench-api). Here the chain is built sync and entered
once. Async views (the OpenAI-compatible endpoint, the SSE relays) are awaited on the event loop from that
thread, as before, and streamed responses are still sent by the event loop.
"""

from __future__ import annotations

import django
from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIHandler


class SyncChainASGIHandler(ASGIHandler):
    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async=False)
        # Entered from ASGIHandler.get_response_async inside the request's ThreadSensitiveContext: one thread
        # per request, the same one Django would have used for the sync parts.
        self._middleware_chain = sync_to_async(self._middleware_chain, thread_sensitive=True)


def get_asgi_application() -> SyncChainASGIHandler:
    django.setup(set_prefix=False)
    return SyncChainASGIHandler()
