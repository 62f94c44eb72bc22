"""Bad input to the REST API: malformed JSON, wrong content types, huge bodies, unknown fields and invalid
pagination each get a clear 4xx in the one error format, and nothing is written."""

from __future__ import annotations

import pytest
from django.test import override_settings
from django_tenants.utils import tenant_context

from api.tests.fixtures import api_client, key_for
from conversations.models import Conversation
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(tenant_a: Tenant):
    _, raw = key_for(tenant_a, scopes="chat")
    return api_client(tenant_a, raw)


def conversations(tenant: Tenant) -> int:
    with tenant_context(tenant):
        return Conversation.objects.count()


def test_malformed_json_is_a_400_naming_the_problem(client, tenant_a: Tenant) -> None:
    before = conversations(tenant_a)
    response = client.post("/api/v1/conversations/", '{"agent": "x",', content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_request" and "JSON" in response.json()["error"]["message"]
    assert conversations(tenant_a) == before


def test_a_wrong_content_type_is_a_415(client, tenant_a: Tenant) -> None:
    response = client.post("/api/v1/conversations/", "agent=x", content_type="text/csv")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


@override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=1024)
def test_a_body_over_the_limit_is_a_413(client, tenant_a: Tenant) -> None:
    before = conversations(tenant_a)
    body = '{"agent": "x", "title": "' + "y" * 4096 + '"}'
    response = client.post("/api/v1/conversations/", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert conversations(tenant_a) == before


def test_unknown_fields_are_named(client, tenant_a: Tenant) -> None:
    response = client.post("/api/v1/conversations/", {"agent": "x", "colour": "blue"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["fields"]["colour"] == ["Unknown field."]


@pytest.mark.parametrize(
    "query, field",
    [("page=0", "page"), ("page=abc", "page"), ("page_size=1000", "page_size"), ("page=99", "page")],
)
def test_invalid_pagination_is_a_400_naming_the_parameter(client, query: str, field: str) -> None:
    response = client.get(f"/api/v1/conversations/?{query}")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
