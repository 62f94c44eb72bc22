"""`TENANT_LIMIT_SET_CALLS`: the connection's search_path is set once per schema switch instead of before
every statement. PostgreSQL undoes a `SET` when the transaction or savepoint that issued it rolls back, so the
backend must set it again afterwards, or the next statement would run in the schema set before."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.db import connection, transaction

from tenants.models import Tenant


class Boom(Exception):
    pass


def search_path() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW search_path")
        return cursor.fetchone()[0]


def test_the_search_path_is_set_once_per_schema_switch() -> None:
    assert settings.TENANT_LIMIT_SET_CALLS is True


@pytest.mark.django_db
def test_the_search_path_is_set_again_after_a_savepoint_rollback(tenant_a: Tenant, tenant_b: Tenant) -> None:
    connection.set_tenant(tenant_a)
    assert search_path().startswith(tenant_a.schema_name)
    with pytest.raises(Boom), transaction.atomic():
        connection.set_tenant(tenant_b)
        assert search_path().startswith(tenant_b.schema_name)
        raise Boom
    # the rollback undid `SET search_path = beta`; the connection is still meant to be on B
    assert connection.schema_name == tenant_b.schema_name
    assert search_path().startswith(tenant_b.schema_name)


@pytest.mark.django_db
def test_the_search_path_follows_every_switch(tenant_a: Tenant, tenant_b: Tenant) -> None:
    for tenant in (tenant_a, tenant_b, tenant_a):
        connection.set_tenant(tenant)
        assert search_path().startswith(tenant.schema_name)
    connection.set_schema_to_public()
    assert search_path() == "public"
