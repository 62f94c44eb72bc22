"""The tenant admin's API keys page: a new key is shown once (never again, never stored), revoking works at
once, and a member's key cannot get scopes beyond their role."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django_tenants.utils import tenant_context

from accounts.models import User
from accounts.services import user_create
from api.models import ApiKey
from api.tests.fixtures import api_client
from conftest import PASSWORD, host_of, owner_email
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_client(client: Client, tenant_a: Tenant) -> Client:
    client.post("/admin/login/", {"username": owner_email("alpha"), "password": PASSWORD}, HTTP_HOST=host_of(tenant_a))
    return client


def test_a_key_made_in_the_admin_is_shown_once_and_works(owner_client: Client, tenant_a: Tenant) -> None:
    # given
    with tenant_context(tenant_a):
        owner = User.objects.get(email=owner_email("alpha"))
    # when
    response = owner_client.post(
        "/admin/api/apikey/add/",
        {
            "name": "Zapier",
            "user": owner.pk,
            "scopes": ["chat", "files"],
            "requests_per_minute": "0",
            "monthly_token_limit": "0",
        },
        HTTP_HOST=host_of(tenant_a),
        follow=True,
    )
    # then: the page shows the key once; only its hash is stored
    page = response.content.decode()
    raw = re.search(r"nxk_[0-9a-f]{8}_[A-Za-z0-9_-]{20,}", page).group(0)
    assert "not be shown again" in page
    with tenant_context(tenant_a):
        key = ApiKey.objects.get(name="Zapier")
    assert key.scopes == ["chat", "files"] and raw.startswith(key.prefix) and raw not in key.key_hash
    assert api_client(tenant_a, raw).get("/api/v1/me/").status_code == 200
    detail = owner_client.get(f"/admin/api/apikey/{key.pk}/change/", HTTP_HOST=host_of(tenant_a)).content.decode()
    assert raw not in detail and key.prefix in detail

    # and revoking it stops it at once
    owner_client.post(
        "/admin/api/apikey/",
        {"action": "revoke", "_selected_action": [key.pk]},
        HTTP_HOST=host_of(tenant_a),
    )
    response = api_client(tenant_a, raw).get("/api/v1/me/")
    assert response.status_code == 401 and response.json()["error"]["code"] == "revoked_api_key"


def test_the_admin_refuses_scopes_beyond_the_users_role(owner_client: Client, tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        member = user_create(email="member@alpha.test", password=PASSWORD)
    response = owner_client.post(
        "/admin/api/apikey/add/",
        {
            "name": "Too much",
            "user": member.pk,
            "scopes": ["chat", "admin"],
            "requests_per_minute": "0",
            "monthly_token_limit": "0",
        },
        HTTP_HOST=host_of(tenant_a),
    )
    assert response.status_code == 200
    assert "does not allow: admin" in str(response.context["adminform"].form.errors["scopes"])
    with tenant_context(tenant_a):
        assert not ApiKey.objects.filter(name="Too much").exists()
