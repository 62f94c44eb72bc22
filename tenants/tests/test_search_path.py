"""`TENANT_LIMIT_SET_CALLS`: the connection's search_path is set once per schema switch instead of before
every statement. PostgreSQL undoes a `SET` when the transaction or savepoint that issued it rolls back, so the
backend must set it again afterwards, or the next statement would run in the schema set before."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.conf import settings
from django.db import connection, connections, transaction

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


def search_path_sets(queries: list[dict]) -> int:
    return sum(1 for query in queries if query["sql"].startswith("SET search_path"))


@pytest.mark.django_db
def test_entering_the_schema_a_connection_is_already_on_sets_nothing(tenant_a: Tenant, tenant_b: Tenant) -> None:
    """nexent_site/db_backend: the connection remembers the search_path it has, so a web call or a task entering
    the tenant its connection last served makes no `SET` (django-tenants made one per `set_tenant`); a switch to
    another schema still does, and every query runs in the schema entered."""
    from django.test.utils import CaptureQueriesContext
    from django_tenants.utils import tenant_context

    with tenant_context(tenant_a):
        assert search_path().startswith(tenant_a.schema_name)
    with CaptureQueriesContext(connection) as captured:
        for _ in range(3):
            with tenant_context(tenant_a):
                assert search_path().startswith(tenant_a.schema_name)
    assert search_path_sets(captured.captured_queries) == 0  # back in public between them, but no query there
    with CaptureQueriesContext(connection) as captured:
        for tenant in (tenant_b, tenant_a, tenant_b):
            with tenant_context(tenant):
                assert search_path().startswith(tenant.schema_name)
    assert search_path_sets(captured.captured_queries) == 3


def on_own_connection(django_db_blocker: Any, func: Callable[[], None]) -> None:
    """`func` in another thread, on a connection of its own outside the test's transaction (autocommit)."""

    def call() -> None:
        try:
            with django_db_blocker.unblock():
                func()
        finally:
            connection.set_schema_to_public()
            connections.close_all()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(call).result()


def test_a_rolled_back_transaction_makes_the_next_cursor_set_the_search_path(
    django_db_setup: None, django_db_blocker: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    """The transaction's `SET search_path = beta` is undone by its rollback: the connection is on alpha again, and
    entering beta afterwards must set it, not trust what was set inside the rolled-back transaction."""

    def check() -> None:
        connection.set_tenant(tenant_a)
        assert search_path().startswith(tenant_a.schema_name)  # autocommit: alpha stays
        with pytest.raises(Boom), transaction.atomic():
            connection.set_tenant(tenant_b)
            assert search_path().startswith(tenant_b.schema_name)
            raise Boom
        connection.set_tenant(tenant_a)
        connection.set_tenant(tenant_b)
        assert search_path().startswith(tenant_b.schema_name)

    on_own_connection(django_db_blocker, check)


def test_a_connection_closed_inside_a_transaction_forgets_its_search_path(
    django_db_setup: None, django_db_blocker: Any, tenant_b: Tenant
) -> None:
    """Given back inside a transaction, psycopg's pool rolls the connection back without Django: what was set in
    that transaction must not be remembered."""
    from nexent_site.db_backend.base import APPLIED

    def check() -> None:
        connection.set_autocommit(False)
        connection.set_tenant(tenant_b)
        assert search_path().startswith(tenant_b.schema_name)
        raw = connection.connection
        assert getattr(raw, APPLIED) == [tenant_b.schema_name, "public"]
        connection.close()
        assert getattr(raw, APPLIED) is None

    on_own_connection(django_db_blocker, check)
