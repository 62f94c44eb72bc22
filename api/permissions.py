"""Scope checks. A view names the scope its reads and its writes need (`read_scope`, `write_scope`), or a
scope per action (`action_scopes`); an API key needs that scope, a signed-in user a role that allows it."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions, permissions
from rest_framework.request import Request

from api.models import ApiKey
from api.scopes import scopes_allowed_for, scopes_expand
from api.services import apikey_scopes


def request_scopes(request: Request) -> frozenset[str]:
    if isinstance(request.auth, ApiKey):
        return apikey_scopes(request.auth)
    user = request.user
    if user is None or not getattr(user, "is_authenticated", False):
        return frozenset()
    return scopes_expand(scopes_allowed_for(user))


def required_scope(view: Any, request: Request) -> str | None:
    action_scopes = getattr(view, "action_scopes", {})
    action = getattr(view, "action", None)
    if action in action_scopes:
        return action_scopes[action]
    if request.method in permissions.SAFE_METHODS:
        return getattr(view, "read_scope", None)
    return getattr(view, "write_scope", None) or getattr(view, "read_scope", None)


class HasScope(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        if request.user is None or not getattr(request.user, "is_authenticated", False):
            raise exceptions.NotAuthenticated(
                "Send an API key: Authorization: Bearer nxk_… (create one in the admin, under API keys)."
            )
        scope = required_scope(view, request)
        if scope is None:
            return True
        if scope not in request_scopes(request):
            raise exceptions.PermissionDenied(f"This needs the “{scope}” scope.", code="missing_scope")
        return True
