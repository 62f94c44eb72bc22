"""System checks that fail fast on bad configuration (run by every manage.py command and at start-up)."""

from typing import Any

from django.conf import settings
from django.core.checks import Error, register

SEARCH_BACKENDS = ("postgres", "elasticsearch")


@register()
def check_configuration(app_configs: Any, **kwargs: Any) -> list:
    problems: list = []
    if settings.SEARCH_BACKEND not in SEARCH_BACKENDS:
        problems.append(
            Error(
                f"SEARCH_BACKEND={settings.SEARCH_BACKEND!r} is not one of {', '.join(SEARCH_BACKENDS)}.",
                id="nexent.E001",
            )
        )
    if settings.SEARCH_BACKEND == "elasticsearch" and not settings.ELASTICSEARCH_URL:
        problems.append(Error("SEARCH_BACKEND=elasticsearch needs ELASTICSEARCH_URL.", id="nexent.E002"))
    return problems
