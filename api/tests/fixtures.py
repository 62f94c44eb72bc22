"""API fixtures: keys and REST clients bound to a tenant's domain."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django_tenants.utils import tenant_context
from rest_framework.test import APIClient

from api.models import ApiKey
from conftest import Committed, host_of, owner_email


def key_for(tenant: Any, *, scopes: str = "chat", email: str | None = None, **options: Any) -> tuple[ApiKey, str]:
    """A key of `tenant` (in the test's transaction), acting as `email` (default: the tenant's owner)."""
    from accounts.models import User
    from api.services import apikey_create

    with tenant_context(tenant):
        user = User.objects.get(email=email or owner_email(tenant.schema_name))
        return apikey_create(user=user, name=options.pop("name", f"test {scopes}"), scopes=scopes, **options)


def api_client(tenant: Any, raw_key: str | None = None) -> APIClient:
    """A DRF test client on `tenant`'s domain, sending `raw_key` as a Bearer token."""
    client = APIClient(HTTP_HOST=host_of(tenant))
    if raw_key:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client


@pytest.fixture
def api_as(tenant_a: Any) -> Callable[..., APIClient]:
    """`api_as("knowledge:read")`: a client of tenant A (or `tenant=`) with a new key of those scopes."""

    def make(scopes: str = "chat", *, tenant: Any = None, **options: Any) -> APIClient:
        tenant = tenant or tenant_a
        _, raw = key_for(tenant, scopes=scopes, **options)
        return api_client(tenant, raw)

    return make


@pytest.fixture
def committed_key(committed: Committed) -> Callable[..., str]:
    """A committed key (for live servers and worker processes): `committed_key(tenant, scopes=...)` → the key."""
    from accounts.models import User
    from api.services import apikey_create

    def make(tenant: Any, *, scopes: str = "chat", email: str | None = None, **options: Any) -> str:
        def create() -> tuple[ApiKey, str]:
            user = User.objects.get(email=email or owner_email(tenant.schema_name))
            return apikey_create(user=user, name=options.pop("name", f"test {scopes}"), scopes=scopes, **options)

        key, raw = committed.run(tenant, create)
        committed.on_teardown(tenant, lambda: ApiKey.objects.filter(pk=key.pk).delete())
        return raw

    return make
