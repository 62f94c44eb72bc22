"""The platform admin on the base domain: create, suspend and delete tenants, with field errors."""

from typing import Any

import pytest
from django.test import Client
from django_tenants.utils import schema_exists, tenant_context

from accounts.models import User
from accounts.services import platform_superuser_ensure
from conftest import PASSWORD
from tenants.models import Tenant

PLATFORM = {"HTTP_HOST": "localhost"}


@pytest.fixture
def staff_client(client: Client) -> Client:
    platform_superuser_ensure(email="root@platform.test", password=PASSWORD)
    response = client.post("/admin/login/", {"username": "root@platform.test", "password": PASSWORD}, **PLATFORM)
    assert response.status_code == 302
    return client


def add_tenant(client: Client, **overrides: str) -> object:
    data = {
        "schema_name": "viaadmin",
        "name": "Via Admin",
        "owner_email": "owner@viaadmin.test",
        "owner_password": PASSWORD,
        "max_users": "10",
        "max_storage_bytes": "1000",
        "monthly_token_budget": "5000",
        "api_requests_per_minute": "120",
        "max_concurrent_runs": "8",
        **overrides,
    }
    return client.post("/admin/tenants/tenant/add/", data, **PLATFORM)


@pytest.mark.django_db
def test_a_new_tenants_form_starts_from_the_platforms_default_run_limit(staff_client: Client, settings: Any) -> None:
    settings.TENANT_MAX_CONCURRENT_RUNS = 6
    form = staff_client.get("/admin/tenants/tenant/add/", **PLATFORM).context["adminform"].form
    assert form["max_concurrent_runs"].value() == 6


@pytest.mark.django_db
def test_platform_admin_creates_a_tenant_with_schema_domain_and_owner(staff_client: Client) -> None:
    response = add_tenant(staff_client)
    assert response.status_code == 302, response.context["adminform"].form.errors
    tenant = Tenant.objects.get(schema_name="viaadmin")
    assert schema_exists("viaadmin")
    assert tenant.get_primary_domain().domain == "viaadmin.localhost"
    assert (tenant.monthly_token_budget, tenant.api_requests_per_minute, tenant.max_concurrent_runs) == (5000, 120, 8)
    with tenant_context(tenant):
        assert User.objects.get().email == "owner@viaadmin.test"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("overrides", "field", "text"),
    [
        ({"schema_name": "Not Valid"}, "schema_name", "lowercase letters"),
        ({"schema_name": "api"}, "schema_name", "reserved"),
        ({"schema_name": "alpha"}, "schema_name", "already exists"),
        ({"owner_password": "abc"}, "owner_password", "too short"),
        ({"max_concurrent_runs": "-1"}, "max_concurrent_runs", "greater than or equal to 0"),
    ],
)
def test_platform_admin_shows_field_errors(staff_client: Client, overrides: dict, field: str, text: str) -> None:
    response = add_tenant(staff_client, **overrides)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert text in " ".join(errors[field])
    assert not Tenant.objects.filter(schema_name="viaadmin").exists()


@pytest.mark.django_db
def test_platform_admin_lists_tenants_but_not_the_platform_row(staff_client: Client) -> None:
    response = staff_client.get("/admin/tenants/tenant/", **PLATFORM)
    listed = {tenant.schema_name for tenant in response.context["cl"].result_list}
    assert {"alpha", "beta", "gamma"} <= listed
    assert "public" not in listed
    assert "Suspended" in response.content.decode()


@pytest.mark.django_db
def test_suspend_and_reactivate_actions(staff_client: Client, tenant_a: Tenant) -> None:
    url = "/admin/tenants/tenant/"
    staff_client.post(url, {"action": "suspend_selected", "_selected_action": [tenant_a.pk]}, **PLATFORM)
    tenant_a.refresh_from_db()
    assert tenant_a.status == "suspended" and "root@platform.test" in tenant_a.suspended_reason
    assert staff_client.get("/", HTTP_HOST="alpha.localhost").status_code == 403

    staff_client.post(url, {"action": "activate_selected", "_selected_action": [tenant_a.pk]}, **PLATFORM)
    tenant_a.refresh_from_db()
    assert tenant_a.is_active


@pytest.mark.django_db
def test_deleting_a_tenant_in_the_admin_drops_its_schema(staff_client: Client) -> None:
    assert add_tenant(staff_client).status_code == 302
    tenant = Tenant.objects.get(schema_name="viaadmin")
    from django.db import connection

    with connection.cursor() as cursor:  # in production creation and deletion are separate transactions
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    response = staff_client.post(f"/admin/tenants/tenant/{tenant.pk}/delete/", {"post": "yes"}, **PLATFORM)
    assert response.status_code == 302
    assert not schema_exists("viaadmin")


@pytest.mark.django_db
def test_platform_admin_refuses_non_superusers(client: Client) -> None:
    from accounts.services import user_create

    user_create(email="plain@platform.test", password=PASSWORD)  # public schema, not staff
    client.post("/admin/login/", {"username": "plain@platform.test", "password": PASSWORD}, **PLATFORM)
    assert client.get("/admin/tenants/tenant/", **PLATFORM).status_code == 302
