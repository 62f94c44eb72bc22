"""Roles per tenant: owners and admins run the tenant admin, members do not; a tenant keeps an owner."""

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django_tenants.utils import tenant_context

from accounts.models import User
from accounts.services import user_create, user_delete, user_update
from conftest import PASSWORD, host_of, owner_email
from tenants.models import Tenant


def login(client: Client, tenant: Tenant, email: str) -> None:
    response = client.post("/admin/login/", {"username": email, "password": PASSWORD}, HTTP_HOST=host_of(tenant))
    assert response.status_code in (200, 302)


@pytest.mark.django_db
@pytest.mark.parametrize(("role", "staff"), [("owner", True), ("admin", True), ("member", False)])
def test_role_decides_admin_access(client: Client, tenant_a: Tenant, role: str, staff: bool) -> None:
    with tenant_context(tenant_a):
        user = user_create(email=f"{role}@example.com", password=PASSWORD, role=role)
    assert user.is_staff is staff
    login(client, tenant_a, f"{role}@example.com")
    response = client.get("/admin/", HTTP_HOST=host_of(tenant_a))
    assert response.status_code == (200 if staff else 302)


@pytest.mark.django_db
def test_the_last_owner_cannot_be_demoted_deactivated_or_deleted(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        owner = User.objects.get(email=owner_email("alpha"))
        with pytest.raises(ValidationError, match="last active owner"):
            user_update(user=owner, role="member")
        with pytest.raises(ValidationError, match="last active owner"):
            user_update(user=owner, is_active=False)
        with pytest.raises(ValidationError, match="last active owner"):
            user_delete(user=owner)
        # with a second owner it is allowed
        user_create(email="second@example.com", password=PASSWORD, role="owner")
        user_update(user=owner, role="member")
        owner.refresh_from_db()
        assert (owner.role, owner.is_staff) == ("member", False)


@pytest.mark.django_db
def test_the_user_limit_is_enforced(tenant_a: Tenant) -> None:
    tenant_a.max_users = 2
    with tenant_context(tenant_a):
        user_create(email="two@example.com", password=PASSWORD)
        with pytest.raises(ValidationError) as excinfo:
            user_create(email="three@example.com", password=PASSWORD)
        assert "limit of 2 users" in excinfo.value.message_dict["email"][0]
        assert not User.objects.filter(email="three@example.com").exists()


@pytest.mark.django_db
def test_admins_cannot_edit_owners_or_grant_ownership(client: Client, tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        user_create(email="adm@example.com", password=PASSWORD, role="admin")
        member = user_create(email="mem@example.com", password=PASSWORD)
        owner = User.objects.get(email=owner_email("alpha"))
    login(client, tenant_a, "adm@example.com")
    host = {"HTTP_HOST": host_of(tenant_a)}

    # the owner's page is read-only for an admin
    page = client.get(f"/admin/accounts/user/{owner.pk}/change/", **host)
    assert page.status_code == 200 and page.context["has_change_permission"] is False

    # promoting a member to owner is not a choice for an admin
    response = client.post(
        f"/admin/accounts/user/{member.pk}/change/",
        {"email": "mem@example.com", "full_name": "", "role": "owner", "is_active": "on"},
        **host,
    )
    assert response.status_code == 200
    assert "role" in response.context["adminform"].form.errors
    with tenant_context(tenant_a):
        assert User.objects.get(pk=member.pk).role == "member"


@pytest.mark.django_db
def test_owner_adds_a_user_in_the_tenant_admin(client: Client, tenant_a: Tenant, tenant_b: Tenant) -> None:
    login(client, tenant_a, owner_email("alpha"))
    response = client.post(
        "/admin/accounts/user/add/",
        {
            "email": "New@Example.com",
            "full_name": "New Person",
            "role": "admin",
            "password1": PASSWORD,
            "password2": PASSWORD,
        },
        HTTP_HOST=host_of(tenant_a),
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    with tenant_context(tenant_a):
        new = User.objects.get(email="new@example.com")
        assert (new.role, new.is_staff, new.full_name) == ("admin", True, "New Person")
    with tenant_context(tenant_b):
        assert not User.objects.filter(email="new@example.com").exists()


@pytest.mark.django_db
def test_tenant_admin_add_user_shows_field_errors(client: Client, tenant_a: Tenant) -> None:
    login(client, tenant_a, owner_email("alpha"))
    response = client.post(
        "/admin/accounts/user/add/",
        {"email": owner_email("alpha").upper(), "role": "member", "password1": PASSWORD, "password2": PASSWORD},
        HTTP_HOST=host_of(tenant_a),
    )
    assert response.status_code == 200
    assert "already exists" in " ".join(response.context["adminform"].form.errors["email"])
