"""The API's URLs on every tenant domain: the REST API under /api/v1/, its OpenAPI schema and Swagger UI,
and the OpenAI-compatible endpoints under /v1/. (The MCP server at /mcp/ is an ASGI app, see asgi.py.)"""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from api import apis

urlpatterns = [
    path(
        "api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="api-schema"
    ),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="api-schema", authentication_classes=[], permission_classes=[]),
        name="api-docs",
    ),
    path(
        "api/v1/",
        include(
            [
                path("me/", apis.MeView.as_view(), name="api-me"),
                path("usage/", apis.UsageView.as_view(), name="api-usage"),
                path("", include("agents.api_urls")),
                path("", include("knowledge.api_urls")),
                path("", include("files.api_urls")),
                path("", include("conversations.api_urls")),
            ]
        ),
    ),
    path("v1/", include("api.openai_urls")),
]
