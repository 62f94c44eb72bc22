"""DRF authentication: API keys (`Authorization: Bearer nxk_…`, or `X-API-Key`) and the pages' session."""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions
from rest_framework.request import Request

from api.services import KEY_PREFIX, apikey_authenticate
from nexent_site.errors import ApplicationError


def raw_key_from(headers: Any) -> str | None:
    """The API key a request carries, if it carries one."""
    header = headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return headers.get("X-API-Key") or None


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`request.user` is the key's user and `request.auth` the ApiKey."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        raw = raw_key_from(request.headers)
        if raw is None:
            return None
        try:
            key = apikey_authenticate(raw)
        except ApplicationError as exc:
            error = exceptions.AuthenticationFailed(exc.message, code=exc.code)
            raise error from None
        return key.user, key

    def authenticate_header(self, request: Request) -> str:
        return f'Bearer realm="api", charset="UTF-8", key_prefix="{KEY_PREFIX}"'


class SessionAuthentication(authentication.SessionAuthentication):
    """The signed-in user of the pages (with Django's CSRF check on unsafe methods)."""
