"""Nothing of one tenant is seen from another: ORM, HTTP by host, sessions and both admin sites."""

import pytest
from django.test import Client
from django_tenants.utils import tenant_context

from accounts.models import User
from accounts.services import user_create
from conftest import PASSWORD, host_of, owner_email
from tenants.models import Tenant


def login(client: Client, tenant: Tenant, email: str, password: str = PASSWORD) -> int:
    response = client.post("/accounts/login/", {"username": email, "password": password}, HTTP_HOST=host_of(tenant))
    return response.status_code


@pytest.mark.django_db
def test_a_row_created_in_tenant_a_is_invisible_from_tenant_b(tenant_a: Tenant, tenant_b: Tenant) -> None:
    # given
    with tenant_context(tenant_a):
        user_create(email="only-in-a@example.com", password=PASSWORD)

    # then
    with tenant_context(tenant_b):
        assert not User.objects.filter(email="only-in-a@example.com").exists()
        assert list(User.objects.values_list("email", flat=True)) == [owner_email("beta")]
    with tenant_context(tenant_a):
        assert User.objects.filter(email="only-in-a@example.com").exists()


@pytest.mark.django_db
def test_owner_logs_in_on_own_domain_but_not_on_another(client: Client, tenant_a: Tenant, tenant_b: Tenant) -> None:
    # when / then: right domain
    assert login(client, tenant_a, owner_email("alpha")) == 302
    assert client.get("/", HTTP_HOST=host_of(tenant_a)).status_code == 200

    # when / then: the same credentials on B's domain
    other = Client()
    response = other.post(
        "/accounts/login/", {"username": owner_email("alpha"), "password": PASSWORD}, HTTP_HOST=host_of(tenant_b)
    )
    assert response.status_code == 200
    assert "correct email" in response.content.decode().lower() or "enter a correct" in response.content.decode()


@pytest.mark.django_db
def test_tenant_a_session_cookie_gets_nothing_on_tenant_b(client: Client, tenant_a: Tenant, tenant_b: Tenant) -> None:
    # given: logged in on A
    assert login(client, tenant_a, owner_email("alpha")) == 302

    # when: the same cookie jar is sent to B
    home = client.get("/", HTTP_HOST=host_of(tenant_b))
    admin = client.get("/admin/", HTTP_HOST=host_of(tenant_b))

    # then
    assert home.status_code == 302 and "/accounts/login/" in home["Location"]
    assert admin.status_code == 302 and "/admin/login/" in admin["Location"]


@pytest.mark.django_db
def test_tenant_admin_lists_only_its_own_users(client: Client, tenant_a: Tenant, tenant_b: Tenant) -> None:
    # given
    with tenant_context(tenant_b):
        user_create(email="secret-b-user@example.com", password=PASSWORD)
    assert login(client, tenant_a, owner_email("alpha")) == 302

    # when
    page = client.get("/admin/accounts/user/", HTTP_HOST=host_of(tenant_a)).content.decode()

    # then
    assert owner_email("alpha") in page
    assert "secret-b-user@example.com" not in page
    assert owner_email("beta") not in page


@pytest.mark.django_db
def test_tenant_admin_cannot_reach_b_user_by_id(client: Client, tenant_a: Tenant, tenant_b: Tenant) -> None:
    # given: a user id that exists only in B
    with tenant_context(tenant_b):
        b_user = user_create(email="target@example.com", password=PASSWORD)
    with tenant_context(tenant_a):
        assert not User.objects.filter(pk=b_user.pk).exists()
    assert login(client, tenant_a, owner_email("alpha")) == 302

    # when
    response = client.get(f"/admin/accounts/user/{b_user.pk}/change/", HTTP_HOST=host_of(tenant_a))

    # then: the admin redirects to its index with "doesn't exist", showing nothing of B
    assert response.status_code == 302
    assert "target@example.com" not in client.get(response["Location"], HTTP_HOST=host_of(tenant_a)).content.decode()


@pytest.mark.django_db
def test_tenant_admin_has_no_platform_models(client: Client, tenant_a: Tenant) -> None:
    assert login(client, tenant_a, owner_email("alpha")) == 302
    assert client.get("/admin/tenants/tenant/", HTTP_HOST=host_of(tenant_a)).status_code == 404
    index = client.get("/admin/", HTTP_HOST=host_of(tenant_a)).content.decode()
    assert "Tenants" not in index and "Alpha Inc" in index


@pytest.mark.django_db
def test_tenant_owner_cannot_use_the_platform_admin(client: Client, tenant_a: Tenant) -> None:
    response = client.post(
        "/admin/login/?next=/admin/", {"username": owner_email("alpha"), "password": PASSWORD}, HTTP_HOST="localhost"
    )
    assert response.status_code == 200  # the form again: no such platform user
    assert client.get("/admin/tenants/tenant/", HTTP_HOST="localhost").status_code == 302


@pytest.mark.django_db
def test_unknown_host_gets_a_clear_404_page(client: Client) -> None:
    response = client.get("/", HTTP_HOST="nosuch.localhost")
    assert response.status_code == 404
    body = response.content.decode()
    assert "No organisation here" in body and "nosuch.localhost" in body
    assert "Traceback" not in body


@pytest.mark.django_db
def test_unknown_host_api_answers_json_404(client: Client) -> None:
    response = client.get("/api/v1/agents/", HTTP_HOST="nosuch.localhost")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_host"
