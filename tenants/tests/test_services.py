from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django_tenants.utils import schema_exists, tenant_context

from accounts.models import User
from conftest import PASSWORD, owner_email
from tenants.models import Domain, Tenant
from tenants.services import tenant_activate, tenant_create, tenant_delete, tenant_suspend


@pytest.mark.django_db
def test_tenant_create_makes_schema_domain_and_owner(settings: Any) -> None:
    # given: the platform's default limit of runs at once for new tenants
    settings.TENANT_MAX_CONCURRENT_RUNS = 6

    # when
    tenant = tenant_create(slug="acme", name="Acme", owner_email="Boss@Acme.test", owner_password=PASSWORD, max_users=7)

    # then
    assert schema_exists("acme")
    assert Domain.objects.get(tenant=tenant, is_primary=True).domain == "acme.localhost"
    assert tenant.max_users == 7 and tenant.is_active
    assert Tenant.objects.get(pk=tenant.pk).max_concurrent_runs == 6
    with tenant_context(tenant):
        owner = User.objects.get()
        assert (owner.email, owner.role, owner.is_staff) == ("boss@acme.test", "owner", True)
        assert owner.check_password(PASSWORD)
    connection.set_schema_to_public()
    assert not User.objects.filter(email="boss@acme.test").exists()  # not a platform user


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"slug": "Bad Slug"}, "slug"),
        ({"slug": "admin"}, "slug"),
        ({"slug": "alpha"}, "slug"),  # exists
        ({"name": "  "}, "name"),
        ({"owner_email": "not-an-email"}, "owner_email"),
        ({"owner_password": "123"}, "owner_password"),
    ],
)
def test_tenant_create_reports_errors_by_field_and_creates_nothing(kwargs: dict, field: str) -> None:
    # given
    args = {"slug": "newco", "name": "NewCo", "owner_email": "a@newco.test", "owner_password": PASSWORD, **kwargs}

    # when
    with pytest.raises(ValidationError) as excinfo:
        tenant_create(**args)

    # then
    assert field in excinfo.value.message_dict
    assert not schema_exists("newco")
    assert Tenant.objects.filter(schema_name__in=["newco", "Bad Slug", "admin"]).count() == 0


@pytest.mark.django_db
def test_suspend_and_activate_keep_the_data(tenant_a: Tenant) -> None:
    # when
    tenant_suspend(tenant=tenant_a, reason="unpaid")
    tenant_a.refresh_from_db()

    # then
    assert (tenant_a.status, tenant_a.suspended_reason) == ("suspended", "unpaid")
    with tenant_context(tenant_a):
        assert User.objects.filter(email=owner_email("alpha")).exists()
    tenant_activate(tenant=tenant_a)
    tenant_a.refresh_from_db()
    assert tenant_a.is_active and tenant_a.suspended_reason == ""


@pytest.mark.django_db
def test_tenant_delete_drops_the_schema() -> None:
    # given
    tenant = tenant_create(slug="doomed", name="Doomed", owner_email="o@doomed.test", owner_password=PASSWORD)
    with connection.cursor() as cursor:  # in production creation and deletion are separate transactions
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")

    # when
    tenant_delete(tenant=tenant)

    # then
    assert not schema_exists("doomed")
    assert not Domain.objects.filter(domain="doomed.localhost").exists()


@pytest.mark.django_db
def test_the_platform_row_cannot_be_suspended_or_deleted() -> None:
    platform = Tenant.objects.get(schema_name="public")
    with pytest.raises(ValidationError):
        tenant_suspend(tenant=platform)
    with pytest.raises(ValidationError):
        tenant_delete(tenant=platform)
