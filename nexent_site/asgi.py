"""One ASGI application for HTTP and websockets, served by uvicorn (the Procfile; daphne for runserver) on one
port. HTTP requests to /mcp go to
the MCP server (api/mcp_server.py, with its own API-key and tenant middleware); everything else to Django."""

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from nexent_site.asgi_handler import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexent_site.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (needs Django set up first)
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from api.mcp_server import is_mcp_path, mcp_application  # noqa: E402
from nexent_site.process_ready import process_ready  # noqa: E402
from nexent_site.routing import websocket_urlpatterns  # noqa: E402
from nexent_site.tenancy import TenantWebsocketMiddleware  # noqa: E402


async def http_application(scope: dict, receive: Callable, send: Callable) -> None:
    if is_mcp_path(scope["path"]):
        return await mcp_application(scope, receive, send)
    return await django_asgi_app(scope, receive, send)


def with_asgi_threads(app: Callable, threads: int) -> Callable:
    """`app`, with its event loop's default executor given `threads` threads (`ASGI_THREADS`; 0: Python's default)
    before its first call.

    The websocket consumers' database calls (`database_sync_to_async`, not thread-sensitive: see
    `nexent_site.tenancy.run_in_tenant`) run in that executor. Daphne sizes it from `ASGI_THREADS`; uvicorn leaves
    Python's default, min(32, CPUs + 4) threads: 6 on two vCPUs, 32 on 28 or more. At 50 chats on two vCPUs, 10 (the
    Procfile's) measured as well as 6 or a little better; 32 (the Procfile's value before, which had no effect) and
    16 were worse: the sends that arrive together ran at once and waited for the GIL instead of for a thread
    (docs/benchmarks-chat.md, twenty-first session)."""
    if threads <= 0:
        return app
    sized: set[int] = set()  # the loops (by id) given the executor: one per process under uvicorn

    async def sized_app(scope: dict, receive: Callable, send: Callable) -> None:
        loop = asyncio.get_running_loop()
        if id(loop) not in sized:
            sized.add(id(loop))
            loop.set_default_executor(ThreadPoolExecutor(max_workers=threads, thread_name_prefix="asgi"))
        return await app(scope, receive, send)

    return sized_app


application = with_asgi_threads(
    ProtocolTypeRouter(
        {
            "http": http_application,
            "websocket": AllowedHostsOriginValidator(TenantWebsocketMiddleware(URLRouter(websocket_urlpatterns))),
        }
    ),
    settings.ASGI_THREADS,
)

process_ready()  # before the first request: URLconfs and templates loaded, start-up's objects frozen
