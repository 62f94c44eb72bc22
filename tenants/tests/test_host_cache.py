"""The host -> tenant lookup is cached per process, and every change to a tenant or a domain reaches every
process on its next request: checked against a real uvicorn process (`asgi_server`) while this process
changes the rows, as the platform admin does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.db import connection

from conftest import Committed, host_of
from nexent_site.tenancy import tenant_for_host
from tenants.models import Domain, Tenant
from tenants.services import tenant_activate, tenant_suspend

pytest_plugins = ["api.tests.fixtures"]


@pytest.mark.django_db
def test_a_repeated_lookup_reads_no_row_and_gives_each_caller_its_own_copy(
    tenant_a: Tenant, django_assert_num_queries: Callable[..., Any]
) -> None:
    first = tenant_for_host(f"{host_of(tenant_a)}:8000")
    first.domain_url = "changed by the first caller"
    with django_assert_num_queries(0):
        second = tenant_for_host(host_of(tenant_a).upper())
    assert second.pk == tenant_a.pk and second is not first
    assert getattr(second, "domain_url", None) != "changed by the first caller"


@pytest.mark.django_db
def test_a_change_in_this_process_is_seen_at_once(tenant_a: Tenant) -> None:
    assert tenant_for_host(host_of(tenant_a)).is_active
    tenant_suspend(tenant=Tenant.objects.get(pk=tenant_a.pk), reason="unpaid")
    assert not tenant_for_host(host_of(tenant_a)).is_active
    connection.set_schema_to_public()
    Domain.objects.create(domain="alias-a.localhost", tenant=tenant_a, is_primary=False)
    assert tenant_for_host("alias-a.localhost").pk == tenant_a.pk
    Domain.objects.filter(domain="alias-a.localhost").delete()  # a queryset delete sends post_delete too
    assert tenant_for_host("alias-a.localhost") is None


@pytest.mark.django_db
def test_another_process_sees_suspension_and_domain_changes_on_its_next_request(
    asgi_server: dict, committed: Committed, committed_key: Callable[..., str], tenant_a: Tenant
) -> None:
    public = Tenant.objects.get(schema_name="public")
    key = committed_key(tenant_a, scopes="chat")
    headers = {"Authorization": f"Bearer {key}"}
    port = asgi_server["port"]

    def me(host: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{port}/api/v1/me/", headers={**headers, "Host": host}, timeout=20)

    # given: the server has looked tenant A up (and cached it)
    assert me(host_of(tenant_a)).json()["tenant"] == tenant_a.schema_name
    assert me(host_of(tenant_a)).status_code == 200

    # when: the platform admin suspends A here; then: the server refuses A's next request
    committed.on_teardown(public, lambda: tenant_activate(tenant=Tenant.objects.get(pk=tenant_a.pk)))
    committed.run(public, lambda: tenant_suspend(tenant=Tenant.objects.get(pk=tenant_a.pk), reason="unpaid"))
    refused = me(host_of(tenant_a))
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "tenant_suspended"
    committed.run(public, lambda: tenant_activate(tenant=Tenant.objects.get(pk=tenant_a.pk)))
    assert me(host_of(tenant_a)).status_code == 200

    # and a domain added to A is served as A at once, and not at all once removed
    assert me("alias-a.localhost").status_code == 404
    committed.on_teardown(public, lambda: Domain.objects.filter(domain="alias-a.localhost").delete())
    committed.run(public, lambda: Domain.objects.create(domain="alias-a.localhost", tenant=tenant_a, is_primary=False))
    assert me("alias-a.localhost").json()["tenant"] == tenant_a.schema_name
    committed.run(public, lambda: Domain.objects.get(domain="alias-a.localhost").delete())
    assert me("alias-a.localhost").status_code == 404


@pytest.mark.django_db
def test_alternating_tenants_on_pooled_connections_each_get_their_own_rows(
    asgi_server: dict, committed_key: Callable[..., str], tenant_a: Tenant, tenant_b: Tenant
) -> None:
    """The server keeps pooled connections and sets the search_path only when the schema changes: requests of
    A and B interleaved over the same connections must never see each other's rows."""
    port = asgi_server["port"]
    keys = {tenant: committed_key(tenant, scopes="admin") for tenant in (tenant_a, tenant_b)}
    for _ in range(15):
        for tenant, key in keys.items():
            response = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/me/",
                headers={"Host": host_of(tenant), "Authorization": f"Bearer {key}"},
                timeout=20,
            )
            assert response.json()["tenant"] == tenant.schema_name
            # and a key of one tenant is unknown on the other's domain, whatever the connection last served
            other = next(t for t in keys if t != tenant)
            refused = httpx.get(
                f"http://127.0.0.1:{port}/api/v1/me/",
                headers={"Host": host_of(other), "Authorization": f"Bearer {key}"},
                timeout=20,
            )
            assert refused.status_code == 401
