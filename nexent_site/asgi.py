"""One ASGI application for HTTP and websockets, served by uvicorn (the Procfile; daphne for runserver) on one
port. HTTP requests to /mcp go to
the MCP server (api/mcp_server.py, with its own API-key and tenant middleware); everything else to Django."""

import os
from collections.abc import Callable

from nexent_site.asgi_handler import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexent_site.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402  (needs Django set up first)
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from api.mcp_server import is_mcp_path, mcp_application  # noqa: E402
from nexent_site.process_ready import process_ready  # noqa: E402
from nexent_site.routing import websocket_urlpatterns  # noqa: E402
from nexent_site.tenancy import TenantWebsocketMiddleware  # noqa: E402


async def http_application(scope: dict, receive: Callable, send: Callable) -> None:
    if is_mcp_path(scope["path"]):
        return await mcp_application(scope, receive, send)
    return await django_asgi_app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": http_application,
        "websocket": AllowedHostsOriginValidator(TenantWebsocketMiddleware(URLRouter(websocket_urlpatterns))),
    }
)

process_ready()  # before the first request: URLconfs and templates loaded, start-up's objects frozen
