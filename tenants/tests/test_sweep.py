"""Scheduled work in every tenant's schema (tenants.sweep), against real PostgreSQL schemas."""

from __future__ import annotations

import pytest
from django.db import connection

from tenants.models import Tenant
from tenants.sweep import tenants_sweep

pytestmark = pytest.mark.django_db


def test_a_sweep_works_in_each_active_tenant_schema_and_goes_on_past_one_that_fails(
    tenant_a: Tenant, tenant_b: Tenant, suspended_tenant: Tenant
) -> None:
    visited: list[str] = []

    def work() -> str:
        visited.append(connection.schema_name)
        if len(visited) == 1:
            raise RuntimeError("this tenant's schema is broken")
        return connection.tenant.schema_name

    results = tenants_sweep(work)

    first = visited[0]
    assert {tenant_a.schema_name, tenant_b.schema_name} <= set(visited)
    assert first not in results  # failed, logged, left out
    assert all(results[schema] == schema for schema in visited[1:])  # each in its own schema
    assert suspended_tenant.schema_name not in visited and "public" not in visited
    # the clean-ups that must reach suspended tenants too
    assert suspended_tenant.schema_name in tenants_sweep(lambda: None, active_only=False)
