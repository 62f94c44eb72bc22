"""The OpenAPI schema and its Swagger UI: valid, complete, and served without any CDN."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.test import Client

from conftest import host_of
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def test_the_schema_is_valid_openapi_without_warnings(tmp_path) -> None:
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out), stdout=StringIO())
    text = out.read_text()
    assert text.startswith("openapi: 3.")
    for path in ("/api/v1/agents/", "/api/v1/knowledge-bases/{kb_id}/documents/", "/api/v1/conversations/"):
        assert f"  {path}:" in text
    assert "bearerFormat: nxk_" in text and "#/components/schemas/Error" in text


def test_swagger_ui_is_served_from_the_sidecar_package(client: Client, tenant_a: Tenant) -> None:
    page = client.get("/api/docs/", HTTP_HOST=host_of(tenant_a))
    assert page.status_code == 200
    html = page.content.decode()
    assert "swagger-ui" in html and "cdn." not in html and "unpkg" not in html
    schema = client.get("/api/schema/?format=json", HTTP_HOST=host_of(tenant_a))
    assert schema.status_code == 200 and schema.json()["info"]["title"] == "Nexent API"
