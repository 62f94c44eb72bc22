"""API keys: create (the key is returned once and never stored), authenticate, revoke."""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.utils import timezone

from accounts.models import User
from api.models import ApiKey
from api.scopes import scopes_allowed_for, scopes_parse
from nexent_site.errors import ApplicationError

KEY_PREFIX = "nxk_"
LAST_USED_RESOLUTION = timedelta(minutes=1)  # last_used_at is written at most once a minute per key


def _hash(raw: str) -> str:
    # Keys are 190+ bits of randomness: a plain SHA-256 is the right tool (a slow hash protects guessable
    # passwords, and would cost every API request tens of milliseconds).
    return hashlib.sha256(raw.encode()).hexdigest()


def apikey_validate(*, user: User, name: str, scopes: str | list[str], expires_at: datetime | None) -> list[str]:
    """The key's scopes, cleaned; ValidationError naming each bad field otherwise."""
    errors: dict[str, list[str]] = {}
    name = (name or "").strip()
    if not name:
        errors["name"] = ["Give the key a name, e.g. what will use it."]
    try:
        scopes = scopes_parse(scopes)
    except ValueError as exc:
        errors["scopes"] = [str(exc)]
    else:
        beyond = sorted(set(scopes) - scopes_allowed_for(user))
        if beyond:
            errors["scopes"] = [f"{user.email}'s role ({user.role}) does not allow: {', '.join(beyond)}."]
    if expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = ["The expiry must be in the future."]
    if errors:
        raise ValidationError(errors)
    return scopes


def apikey_create(
    *,
    user: User,
    name: str,
    scopes: str | list[str],
    expires_at: datetime | None = None,
    requests_per_minute: int = 0,
    monthly_token_limit: int = 0,
) -> tuple[ApiKey, str]:
    """A new key acting as `user`, with scopes their role allows. Returns the row and the key itself, which
    is not stored anywhere: show it once."""
    scopes = apikey_validate(user=user, name=name, scopes=scopes, expires_at=expires_at)
    public = secrets.token_hex(4)
    raw = f"{KEY_PREFIX}{public}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(
        name=name.strip()[:100],
        prefix=f"{KEY_PREFIX}{public}",
        key_hash=_hash(raw),
        user=user,
        scopes=scopes,
        expires_at=expires_at,
        requests_per_minute=requests_per_minute,
        monthly_token_limit=monthly_token_limit,
    )
    return key, raw


def apikey_authenticate(raw: str) -> ApiKey:
    """The usable key for `raw` in the current tenant's schema, or ApplicationError (401) saying why not.
    A key of another tenant is simply unknown here."""
    raw = (raw or "").strip()
    key = None
    if raw.startswith(KEY_PREFIX) and len(raw) < 200:
        # get(), not first(): no ORDER BY to compile and run on the path of every API request
        with contextlib.suppress(ApiKey.DoesNotExist):
            key = ApiKey.objects.select_related("user").get(key_hash=_hash(raw))
    if key is None:
        raise ApplicationError("Invalid API key.", code="invalid_api_key", status=401)
    if key.revoked_at is not None:
        raise ApplicationError("This API key has been revoked.", code="revoked_api_key", status=401)
    if key.is_expired:
        raise ApplicationError("This API key has expired.", code="expired_api_key", status=401)
    if not key.user.is_active:
        raise ApplicationError("The user of this API key is deactivated.", code="inactive_user", status=401)
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        key.last_used_at = now
    return key


def apikey_revoke(*, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


def apikey_scopes(key: ApiKey) -> frozenset[str]:
    """What the key may do now: its scopes, cut down to what its user's role still allows."""
    from api.scopes import scopes_expand

    return scopes_expand(key.scopes) & scopes_expand(scopes_allowed_for(key.user))
