"""Tenant context outside HTTP: websockets (real consumer), Celery (a real worker process), commands."""

import pytest
from celery.exceptions import TimeoutError as CeleryTimeout
from channels.testing import WebsocketCommunicator
from django.core.management.base import CommandError
from django.db import connection
from django_tenants.utils import tenant_context

from conftest import Committed, host_of, owner_email
from nexent_site.asgi import application
from nexent_site.tenancy import WS_CLOSE_UNKNOWN_HOST, tenant_command_context
from tenants.models import Tenant
from tenants.tasks import tenant_probe


def communicator_for(host: str, cookie: str | None = None) -> WebsocketCommunicator:
    headers = [(b"host", host.encode()), (b"origin", f"http://{host}".encode())]
    if cookie:
        headers.append((b"cookie", f"nexent_session={cookie}".encode()))
    return WebsocketCommunicator(application, "/ws/status/", headers=headers)


@pytest.mark.django_db
async def test_websocket_resolves_the_tenant_from_the_host(tenant_a: Tenant) -> None:
    communicator = communicator_for(host_of(tenant_a))
    connected, _ = await communicator.connect()
    assert connected
    assert await communicator.receive_json_from() == {"type": "session", "tenant": "alpha", "user": None, "role": None}
    await communicator.disconnect()


@pytest.mark.django_db
async def test_websocket_loads_the_user_from_the_tenant_schema(
    tenant_a: Tenant, tenant_b: Tenant, committed: Committed
) -> None:
    # given: a session of A's owner, stored in A's schema
    key = committed.session_cookie(tenant_a, owner_email("alpha"))

    # when / then: on A the session is A's owner
    on_a = communicator_for(host_of(tenant_a), cookie=key)
    assert (await on_a.connect())[0]
    message = await on_a.receive_json_from()
    assert (message["tenant"], message["user"], message["role"]) == ("alpha", owner_email("alpha"), "owner")
    await on_a.disconnect()

    # when / then: the same cookie on B is nobody
    on_b = communicator_for(host_of(tenant_b), cookie=key)
    assert (await on_b.connect())[0]
    assert (await on_b.receive_json_from())["user"] is None
    await on_b.disconnect()


@pytest.mark.django_db
@pytest.mark.parametrize("host", ["nosuch.localhost", "localhost", ""])
async def test_websocket_is_refused_for_unknown_and_platform_hosts(host: str) -> None:
    communicator = communicator_for(host) if host else WebsocketCommunicator(application, "/ws/status/")
    connected, code = await communicator.connect()
    assert not connected
    if host:  # with no Host header the origin check refuses first
        assert code == WS_CLOSE_UNKNOWN_HOST
    await communicator.disconnect()


@pytest.mark.django_db
async def test_websocket_answers_bad_frames_with_an_error(tenant_a: Tenant) -> None:
    communicator = communicator_for(host_of(tenant_a))
    await communicator.connect()
    await communicator.receive_json_from()
    await communicator.send_to(text_data="{not json")
    assert (await communicator.receive_json_from())["code"] == "bad_frame"
    await communicator.send_json_to({"type": "ping"})
    assert await communicator.receive_json_from() == {"type": "pong"}
    await communicator.disconnect()


@pytest.mark.django_db
def test_a_task_runs_in_the_schema_of_the_tenant_that_enqueued_it(
    celery_worker: dict, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    # when
    with tenant_context(tenant_a):
        from_a = tenant_probe.delay()
    with tenant_context(tenant_b):
        from_b = tenant_probe.delay()

    # then: each saw its own schema and its own users only
    assert from_a.get(timeout=30) == {"schema": "alpha", "users": 1, "owners": [owner_email("alpha")]}
    assert from_b.get(timeout=30) == {"schema": "beta", "users": 1, "owners": [owner_email("beta")]}


@pytest.mark.django_db
def test_tasks_of_two_tenants_interleaved_on_reused_worker_connections_each_see_their_own(
    celery_worker: dict, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    """Worker processes keep their database connection from task to task (CONN_MAX_AGE in workers), so one
    connection serves tenant A's task, then B's, then A's again: each must see only its own schema."""
    # when: alternating tenants, more tasks than the worker has processes
    results = []
    for _ in range(6):
        for tenant in (tenant_a, tenant_b):
            with tenant_context(tenant):
                results.append((tenant.schema_name, tenant_probe.delay()))

    # then
    for schema, result in results:
        assert result.get(timeout=30) == {"schema": schema, "users": 1, "owners": [owner_email(schema)]}


@pytest.mark.django_db
def test_a_worker_refuses_tasks_of_a_suspended_tenant(celery_worker: dict, suspended_tenant: Tenant) -> None:
    # when
    with tenant_context(suspended_tenant):
        result = tenant_probe.delay()

    # then: the task fails with the reason, its body never ran
    with pytest.raises(Exception) as excinfo:
        result.get(timeout=30)
    assert not isinstance(excinfo.value, CeleryTimeout)
    assert "suspended" in str(excinfo.value)
    assert result.state == "FAILURE"


@pytest.mark.django_db
def test_a_worker_that_ran_tasks_of_a_tenant_refuses_them_once_it_is_suspended(
    celery_worker: dict, committed: Committed, tenant_a: Tenant
) -> None:
    """The worker caches tenant lookups: a suspension made here must still stop its very next task."""
    from tenants.services import tenant_activate, tenant_suspend

    public = Tenant.objects.get(schema_name="public")
    with tenant_context(tenant_a):
        assert tenant_probe.delay().get(timeout=30)["schema"] == "alpha"  # looked up, and cached

    committed.on_teardown(public, lambda: tenant_activate(tenant=Tenant.objects.get(pk=tenant_a.pk)))
    committed.run(public, lambda: tenant_suspend(tenant=Tenant.objects.get(pk=tenant_a.pk), reason="unpaid"))
    with tenant_context(tenant_a):
        refused = tenant_probe.delay()
    with pytest.raises(Exception, match="suspended"):
        refused.get(timeout=30)

    committed.run(public, lambda: tenant_activate(tenant=Tenant.objects.get(pk=tenant_a.pk)))
    with tenant_context(tenant_a):
        assert tenant_probe.delay().get(timeout=30)["schema"] == "alpha"


@pytest.mark.django_db
def test_command_context_enters_the_tenant_and_refuses_bad_slugs(tenant_a: Tenant, suspended_tenant: Tenant) -> None:
    with tenant_command_context("alpha"):
        assert connection.schema_name == "alpha"
    with pytest.raises(CommandError, match="No tenant with slug 'nope'"), tenant_command_context("nope"):
        pass
    with pytest.raises(CommandError, match="No tenant"), tenant_command_context("public"):
        pass
    with pytest.raises(CommandError, match="suspended"), tenant_command_context("gamma"):
        pass
    with tenant_command_context("gamma", allow_suspended=True):
        assert connection.schema_name == "gamma"
