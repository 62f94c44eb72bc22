"""Search backends behind one interface; `SEARCH_BACKEND` picks one (postgres by default)."""

from __future__ import annotations

from functools import cache

from django.conf import settings

from knowledge.search.base import SearchBackend


@cache
def _backend(name: str) -> SearchBackend:
    if name == "elasticsearch":
        from knowledge.search.elasticsearch import ElasticsearchBackend

        return ElasticsearchBackend()
    from knowledge.search.postgres import PostgresBackend

    return PostgresBackend()


def search_backend() -> SearchBackend:
    return _backend(settings.SEARCH_BACKEND)
