"""A suspended tenant answers 403 on pages, admin, API and websockets; its data stays intact."""

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client
from django_tenants.utils import tenant_context

from accounts.models import User
from conftest import PASSWORD, host_of, owner_email
from nexent_site.asgi import application
from nexent_site.tenancy import WS_CLOSE_SUSPENDED
from tenants.models import Tenant


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/", "/accounts/login/", "/admin/", "/admin/accounts/user/"])
def test_pages_and_admin_answer_403(client: Client, suspended_tenant: Tenant, path: str) -> None:
    response = client.get(path, HTTP_HOST=host_of(suspended_tenant))
    assert response.status_code == 403
    assert "suspended" in response.content.decode()


@pytest.mark.django_db
def test_login_post_is_refused_too(client: Client, suspended_tenant: Tenant) -> None:
    response = client.post(
        "/accounts/login/",
        {"username": owner_email("gamma"), "password": PASSWORD},
        HTTP_HOST=host_of(suspended_tenant),
    )
    assert response.status_code == 403
    assert "nexent_session" not in response.cookies


@pytest.mark.django_db
def test_api_answers_403_json(client: Client, suspended_tenant: Tenant) -> None:
    response = client.get("/api/v1/agents/", HTTP_HOST=host_of(suspended_tenant))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "tenant_suspended"
    # the OpenAI-compatible API answers in OpenAI's error format, which its clients parse
    response = client.post(
        "/v1/chat/completions", {}, content_type="application/json", HTTP_HOST=host_of(suspended_tenant)
    )
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error" and "suspended" in response.json()["error"]["message"]


@pytest.mark.django_db
def test_data_stays_intact(suspended_tenant: Tenant) -> None:
    with tenant_context(suspended_tenant):
        assert User.objects.filter(email=owner_email("gamma"), role="owner").exists()


@pytest.mark.django_db
async def test_websocket_connect_is_refused(suspended_tenant: Tenant) -> None:
    host = host_of(suspended_tenant)
    communicator = WebsocketCommunicator(
        application, "/ws/status/", headers=[(b"host", host.encode()), (b"origin", f"http://{host}".encode())]
    )
    connected, code = await communicator.connect()
    assert not connected
    assert code == WS_CLOSE_SUSPENDED
    await communicator.disconnect()
