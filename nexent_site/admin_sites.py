"""Two admin sites: the platform console on the base domain, and each tenant's own console on its domain.

Models are registered on the site they belong to, so a tenant's staff can never reach platform models
(tenants, domains) and the platform console never lists a tenant's data.
"""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django_tenants.utils import get_public_schema_name


class PlatformAdminSite(admin.AdminSite):
    site_header = "Nexent platform"
    site_title = "Nexent platform"
    index_title = "Tenants and platform staff"

    def has_permission(self, request: HttpRequest) -> bool:
        tenant = getattr(request, "tenant", None)
        on_platform = tenant is not None and tenant.schema_name == get_public_schema_name()
        return on_platform and request.user.is_active and request.user.is_superuser


class TenantAdminSite(admin.AdminSite):
    site_title = "Nexent"
    index_title = "Manage your organisation"

    def has_permission(self, request: HttpRequest) -> bool:
        tenant = getattr(request, "tenant", None)
        in_tenant = tenant is not None and tenant.schema_name != get_public_schema_name()
        return in_tenant and request.user.is_active and request.user.is_staff

    def each_context(self, request: HttpRequest) -> dict[str, Any]:
        context = super().each_context(request)
        tenant = getattr(request, "tenant", None)
        if tenant is not None:
            context["site_header"] = f"{tenant.name} · Nexent"
        return context


def admin_adopt(obj: Any, saved: Any) -> None:
    """After a service created the row for an admin add form: make the form's unsaved `obj` stand for it,
    so the admin's log entry and redirect point at the saved row."""
    obj.pk, obj._state.adding, obj._state.db = saved.pk, False, saved._state.db


platform_admin_site = PlatformAdminSite(name="admin")
tenant_admin_site = TenantAdminSite(name="admin")
