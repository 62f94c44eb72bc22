"""The database backend's prepared cursor (nexent_site/db_backend), against real PostgreSQL: statements bound on
the server and prepared on their connection (by their first run, or after a few), each tenant's run reading its
own schema, and Django still logging them and raising its own errors."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.utils import DataError
from django.test.utils import CaptureQueriesContext

from conftest import owner_email
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def _prepared(fragment: str) -> int:
    """How many statements prepared on this connection contain `fragment` (PostgreSQL's own list)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", [f"%{fragment}%"])
        return cursor.fetchone()[0]


def _run(sql: str, params: list, *, at_once: bool = True) -> object:
    with connection.prepared_cursor(at_once=at_once) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchone()[0]


def test_a_statement_is_prepared_by_its_first_run_or_once_it_has_run_five_times(tenant_a: Tenant) -> None:
    connection.set_tenant(tenant_a)

    _run("SELECT count(*) FROM accounts_user WHERE id <> %s -- at once", [0])
    assert _prepared("-- at once") == 1

    prepared_after_each = []
    for _ in range(6):
        _run("SELECT count(*) FROM accounts_user WHERE id <> %s -- later", [0], at_once=False)
        prepared_after_each.append(_prepared("-- later"))
    assert prepared_after_each == [0, 0, 0, 0, 0, 1]  # psycopg's prepare_threshold, 5 (settings)


def test_one_prepared_statement_reads_the_schema_of_each_tenant_it_runs_for(tenant_a: Tenant, tenant_b: Tenant) -> None:
    """PostgreSQL parses a prepared statement again when the connection's search_path has changed: run for tenant
    A, then B, then A, the same prepared statement finds A's owner in A's schema only."""
    sql = "SELECT count(*) FROM accounts_user WHERE email = %s -- per tenant"
    found = []
    for tenant in (tenant_a, tenant_b, tenant_a):
        connection.set_tenant(tenant)
        found.append(_run(sql, [owner_email("alpha")]))

    assert found == [1, 0, 1]
    assert _prepared("-- per tenant") == 1


def test_prepared_statements_are_logged_with_their_values_and_fail_with_djangos_errors(tenant_a: Tenant) -> None:
    connection.set_tenant(tenant_a)
    with CaptureQueriesContext(connection) as queries:
        _run("SELECT %s::text", ["logged"])
    assert queries.captured_queries[-1]["sql"] == "SELECT 'logged'::text"

    with pytest.raises(DataError), transaction.atomic():
        _run("SELECT 1 / %s", [0])
    # the connection is still usable after the savepoint's rollback (which dropped what was prepared)
    assert _run("SELECT %s + 1", [1]) == 2
