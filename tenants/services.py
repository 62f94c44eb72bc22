"""Writes for tenants: create (schema, domain, owner), suspend, activate, delete."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from accounts.models import User
from accounts.services import user_create, user_validate_new
from agents.services.providers import providers_ensure_defaults
from files.storage import storage_delete_tenant
from tenants.models import Domain, Tenant
from tenants.validators import validate_tenant_slug

logger = logging.getLogger(__name__)


def tenant_domain_for(slug: str) -> str:
    return f"{slug}.{settings.NEXENT_BASE_DOMAIN}"


def tenant_validate_new(*, slug: str, name: str) -> None:
    """Field-keyed errors for a new tenant's slug and name, checked before any schema is created."""
    errors: dict[str, list[str]] = {}
    try:
        validate_tenant_slug(slug)
    except ValidationError as exc:
        errors["slug"] = exc.messages
    else:
        with schema_context(get_public_schema_name()):
            if Tenant.objects.filter(schema_name=slug).exists():
                errors["slug"] = [f"A tenant with slug “{slug}” already exists."]
            elif Domain.objects.filter(domain=tenant_domain_for(slug)).exists():
                errors["slug"] = [f"The domain {tenant_domain_for(slug)} is already in use."]
    if not (name or "").strip():
        errors["name"] = ["A name is required."]
    if errors:
        raise ValidationError(errors)


@transaction.atomic
def tenant_create(
    *,
    slug: str,
    name: str,
    owner_email: str,
    owner_password: str,
    max_users: int | None = None,
    max_storage_bytes: int | None = None,
    monthly_token_budget: int | None = None,
    api_requests_per_minute: int | None = None,
    max_concurrent_runs: int | None = None,
) -> Tenant:
    """Create a tenant: its schema (migrated), its domain `<slug>.<NEXENT_BASE_DOMAIN>`, its owner and its
    default model providers (the bundled local models unless LLM_* / EMBEDDING_* name others).

    Everything is validated before the schema is created; errors are keyed by field (`slug`, `name`,
    `owner_email`, `owner_password`). All-or-nothing: a failure leaves no schema, row or user behind.
    """
    slug = (slug or "").strip()
    errors: dict[str, list[str]] = {}
    try:
        tenant_validate_new(slug=slug, name=name)
    except ValidationError as exc:
        errors.update(exc.message_dict)
    try:
        user_validate_new(email=owner_email, password=owner_password, role=User.Role.OWNER, check_unique=False)
    except ValidationError as exc:
        errors.update({f"owner_{field}": messages for field, messages in exc.message_dict.items()})
    if errors:
        raise ValidationError(errors)

    limits = {
        key: value
        for key, value in {
            "max_users": max_users,
            "max_storage_bytes": max_storage_bytes,
            "monthly_token_budget": monthly_token_budget,
            "api_requests_per_minute": api_requests_per_minute,
            "max_concurrent_runs": max_concurrent_runs,
        }.items()
        if value is not None
    }
    with schema_context(get_public_schema_name()):
        tenant = Tenant(schema_name=slug, name=name.strip(), **limits)
        tenant.save(verbosity=0)  # django-tenants creates and migrates the schema here
        Domain.objects.create(domain=tenant_domain_for(slug), tenant=tenant, is_primary=True)
    with tenant_context(tenant):
        user_create(email=owner_email, password=owner_password, role=User.Role.OWNER)
        providers_ensure_defaults()
    logger.info("created tenant %s", slug)
    return tenant


def tenant_suspend(*, tenant: Tenant, reason: str = "") -> Tenant:
    """Suspend: pages, API and websockets answer 403 and workers refuse its tasks. Data stays intact."""
    if tenant.is_platform:
        raise ValidationError("The platform itself cannot be suspended.")
    tenant.status = Tenant.Status.SUSPENDED
    tenant.suspended_reason = reason[:300]
    tenant.save(update_fields=["status", "suspended_reason", "updated_at"])
    logger.info("suspended tenant %s", tenant.schema_name)
    return tenant


def tenant_activate(*, tenant: Tenant) -> Tenant:
    tenant.status = Tenant.Status.ACTIVE
    tenant.suspended_reason = ""
    tenant.save(update_fields=["status", "suspended_reason", "updated_at"])
    logger.info("activated tenant %s", tenant.schema_name)
    return tenant


def tenant_delete(*, tenant: Tenant) -> None:
    """Delete the tenant, its domains, its schema with all its data, and its stored files. Irreversible."""
    if tenant.is_platform:
        raise ValidationError("The platform itself cannot be deleted.")
    slug = tenant.schema_name
    with schema_context(get_public_schema_name()):
        tenant.delete(force_drop=True)
    # the stored files go with the schema, once the deletion is committed
    transaction.on_commit(lambda: storage_delete_tenant(slug))
    logger.info("deleted tenant %s", slug)


def platform_tenant_ensure() -> Tenant:
    """The `public` tenant row and the base-domain Domain that route the landing page and platform admin."""
    with schema_context(get_public_schema_name()):
        tenant, _ = Tenant.objects.get_or_create(
            schema_name=get_public_schema_name(), defaults={"name": "Nexent platform"}
        )
        Domain.objects.get_or_create(
            domain=settings.NEXENT_BASE_DOMAIN, defaults={"tenant": tenant, "is_primary": True}
        )
    return tenant
