"""What an API key (or a signed-in user) may do. A key's scopes are fixed at creation and can never exceed
what its user's role allows; `admin` includes every other scope, `knowledge:write` includes `knowledge:read`."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import models

from accounts.models import User


class Scope(models.TextChoices):
    CHAT = "chat", "chat: agents, conversations, messages, runs, /v1 chat completions"
    KNOWLEDGE_READ = "knowledge:read", "knowledge:read: knowledge bases, documents and search"
    KNOWLEDGE_WRITE = "knowledge:write", "knowledge:write: create knowledge bases, upload and manage documents"
    FILES = "files", "files: upload, list, download and delete files"
    ADMIN = "admin", "admin: everything, including providers, agents and usage"


IMPLIED: dict[str, set[str]] = {
    Scope.ADMIN: set(Scope.values),
    Scope.KNOWLEDGE_WRITE: {Scope.KNOWLEDGE_WRITE, Scope.KNOWLEDGE_READ},
}
MEMBER_SCOPES = frozenset({Scope.CHAT, Scope.KNOWLEDGE_READ, Scope.FILES})


def scopes_expand(scopes: Iterable[str]) -> frozenset[str]:
    expanded: set[str] = set()
    for scope in scopes:
        expanded |= IMPLIED.get(scope, {scope})
    return frozenset(expanded)


def scopes_allowed_for(user: User) -> frozenset[str]:
    """The scopes a user's role allows: staff (owners, admins) everything, members chat, files and reading
    knowledge."""
    if not user.is_active:
        return frozenset()
    if user.role in User.STAFF_ROLES:
        return frozenset(Scope.values)
    return MEMBER_SCOPES


def scopes_parse(value: str | Iterable[str]) -> list[str]:
    """`"chat, admin"` or a list → the scopes, checked against the known ones (ValueError names the unknown)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    scopes = sorted({item.strip() for item in items if item and item.strip()})
    unknown = [scope for scope in scopes if scope not in Scope.values]
    if unknown:
        raise ValueError(f"Unknown scope(s): {', '.join(unknown)}. Known: {', '.join(Scope.values)}.")
    if not scopes:
        raise ValueError(f"Give at least one scope: {', '.join(Scope.values)}.")
    return scopes
