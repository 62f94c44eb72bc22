from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def search_backend_check(app_configs: Any, **kwargs: Any) -> list[Error]:
    errors = []
    if settings.SEARCH_BACKEND not in ("postgres", "elasticsearch"):
        errors.append(
            Error(
                f"SEARCH_BACKEND is {settings.SEARCH_BACKEND!r}.",
                hint="Use 'postgres' (the default) or 'elasticsearch'.",
                id="knowledge.E001",
            )
        )
    if settings.SEARCH_BACKEND == "elasticsearch" and not settings.ELASTICSEARCH_URL:
        errors.append(
            Error(
                "SEARCH_BACKEND is 'elasticsearch' but ELASTICSEARCH_URL is not set.",
                hint="Set ELASTICSEARCH_URL, e.g. http://localhost:9200.",
                id="knowledge.E002",
            )
        )
    return errors
