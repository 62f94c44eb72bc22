"""API keys: shown once, stored hashed, scoped, expiring, revocable, and bound to their tenant."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from io import StringIO

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.utils import timezone
from django_tenants.utils import tenant_context

from accounts.services import user_create
from api.models import ApiKey
from api.services import apikey_authenticate, apikey_revoke
from api.tests.fixtures import api_client, key_for
from conftest import PASSWORD, host_of
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def test_a_key_is_stored_hashed_with_a_visible_prefix(tenant_a: Tenant) -> None:
    # given / when
    key, raw = key_for(tenant_a, scopes="chat,knowledge:read")
    # then
    with tenant_context(tenant_a):
        stored = ApiKey.objects.get(pk=key.pk)
    assert raw.startswith(stored.prefix + "_") and stored.prefix.startswith("nxk_")
    assert stored.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in str(stored.__dict__.values())
    assert stored.scopes == ["chat", "knowledge:read"]


def test_the_key_authenticates_as_its_user_and_reports_its_scopes(tenant_a: Tenant) -> None:
    # given
    _, raw = key_for(tenant_a, scopes="knowledge:write")
    # when
    response = api_client(tenant_a, raw).get("/api/v1/me/")
    # then
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["tenant"] == "alpha" and body["user"] == "owner@alpha.test"
    assert body["scopes"] == ["knowledge:read", "knowledge:write"]
    assert body["key"]["prefix"] == raw[:12]
    with tenant_context(tenant_a):
        assert ApiKey.objects.get(prefix=raw[:12]).last_used_at is not None


@pytest.mark.parametrize(
    "header, code",
    [
        ({}, "not_authenticated"),
        ({"HTTP_AUTHORIZATION": "Bearer nxk_nothing_here"}, "invalid_api_key"),
        ({"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz"}, "not_authenticated"),
    ],
)
def test_requests_without_a_valid_key_get_401_in_the_error_format(tenant_a: Tenant, header: dict, code: str) -> None:
    response = api_client(tenant_a).get("/api/v1/me/", **header)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == code
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_revoked_and_expired_keys_are_refused_with_the_reason(tenant_a: Tenant) -> None:
    # given
    revoked, revoked_raw = key_for(tenant_a, scopes="chat")
    expiring, expiring_raw = key_for(tenant_a, scopes="chat", expires_at=timezone.now() + timedelta(hours=1))
    with tenant_context(tenant_a):
        apikey_revoke(key=revoked)
        ApiKey.objects.filter(pk=expiring.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    # when / then
    response = api_client(tenant_a, revoked_raw).get("/api/v1/me/")
    assert response.status_code == 401 and response.json()["error"]["code"] == "revoked_api_key"
    response = api_client(tenant_a, expiring_raw).get("/api/v1/me/")
    assert response.status_code == 401 and response.json()["error"]["code"] == "expired_api_key"


def test_unknown_api_paths_answer_404_in_the_error_format(tenant_a: Tenant) -> None:
    response = api_client(tenant_a).get("/api/v1/no-such-thing/")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Nothing at /api/v1/no-such-thing/."}}


def test_a_key_of_tenant_a_is_unknown_on_tenant_b(tenant_a: Tenant, tenant_b: Tenant) -> None:
    # given
    _, raw = key_for(tenant_a, scopes="admin")
    # when
    response = api_client(tenant_b, raw).get("/api/v1/me/")
    # then
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_a_missing_scope_is_named_in_a_403(tenant_a: Tenant) -> None:
    _, raw = key_for(tenant_a, scopes="chat")
    response = api_client(tenant_a, raw).get("/api/v1/usage/?group_by=agent")
    assert response.status_code == 200  # usage needs no scope: a chat key sees its own
    _, raw = key_for(tenant_a, scopes="files")
    response = api_client(tenant_a, raw).get("/api/v1/knowledge-bases/")
    assert response.status_code == 403
    assert response.json()["error"] == {"code": "missing_scope", "message": "This needs the “knowledge:read” scope."}


def test_a_members_key_cannot_have_scopes_beyond_their_role(tenant_a: Tenant) -> None:
    # given
    with tenant_context(tenant_a):
        user_create(email="member@alpha.test", password=PASSWORD)
    # when / then
    with pytest.raises(ValidationError) as excinfo:
        key_for(tenant_a, scopes="chat,admin", email="member@alpha.test")
    assert "does not allow: admin" in excinfo.value.message_dict["scopes"][0]
    with pytest.raises(ValidationError) as excinfo:
        key_for(tenant_a, scopes="chat,nonsense")
    assert "Unknown scope(s): nonsense" in excinfo.value.message_dict["scopes"][0]


def test_a_session_user_uses_the_api_with_their_roles_scopes(tenant_a: Tenant, client) -> None:
    # given
    with tenant_context(tenant_a):
        from accounts.models import User

        client.force_login(User.objects.get(email="owner@alpha.test"))
    # when
    response = client.get("/api/v1/me/", HTTP_HOST=host_of(tenant_a))
    # then
    assert response.status_code == 200
    assert response.json()["key"] is None and "admin" in response.json()["scopes"]


def test_apikey_create_prints_only_a_working_key(tenant_a: Tenant, committed) -> None:
    # given
    out = StringIO()
    # when
    committed.run(
        Tenant.objects.get(schema_name="public"),
        lambda: call_command(
            "apikey_create", "--tenant", "alpha", "--scopes", "chat,admin", "--name", "CI", stdout=out
        ),
    )
    raw = out.getvalue().strip()
    committed.on_teardown(tenant_a, lambda: ApiKey.objects.filter(prefix=raw[:12]).delete())
    # then
    assert raw.startswith("nxk_") and "\n" not in raw
    key = committed.run(tenant_a, lambda: apikey_authenticate(raw))  # committed: the test must not hold its row
    assert key.name == "CI" and key.scopes == ["admin", "chat"]
    assert key.user.email == "owner@alpha.test"
