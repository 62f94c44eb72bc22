from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django_tenants.utils import get_public_schema_name

from nexent_site.admin_sites import admin_adopt, platform_admin_site
from tenants.forms import TenantCreationForm
from tenants.models import Domain, Tenant
from tenants.services import tenant_activate, tenant_create, tenant_delete, tenant_suspend


class DomainInline(admin.TabularInline):
    model = Domain
    extra = 0
    fields = ["domain", "is_primary"]


@admin.register(Tenant, site=platform_admin_site)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["schema_name", "name", "status_badge", "site_link", "max_users", "created_at"]
    list_display_links = ["schema_name", "name"]
    list_filter = ["status", "created_at"]
    search_fields = ["schema_name", "name", "domains__domain"]
    readonly_fields = ["schema_name", "status", "suspended_reason", "created_at", "updated_at", "site_link"]
    fieldsets = [
        (None, {"fields": ["schema_name", "name", "site_link"]}),
        ("Status", {"fields": ["status", "suspended_reason"]}),
        ("Limits", {"fields": list(Tenant.LIMIT_FIELDS)}),
        ("Dates", {"fields": ["created_at", "updated_at"]}),
    ]
    inlines = [DomainInline]
    actions = ["suspend_selected", "activate_selected"]
    ordering = ["schema_name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        # The platform's own row routes the base domain; it is not a tenant to manage here.
        return super().get_queryset(request).exclude(schema_name=get_public_schema_name()).prefetch_related("domains")

    def get_form(self, request: HttpRequest, obj: Tenant | None = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = TenantCreationForm
        return super().get_form(request, obj, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Tenant | None = None) -> Any:
        if obj is None:
            return [
                (None, {"fields": ["schema_name", "name"]}),
                ("First owner", {"fields": ["owner_email", "owner_password"]}),
                ("Limits", {"fields": list(Tenant.LIMIT_FIELDS)}),
            ]
        return self.fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Tenant | None = None) -> Any:
        return self.readonly_fields if obj else []

    def get_inline_instances(self, request: HttpRequest, obj: Tenant | None = None) -> list:
        return super().get_inline_instances(request, obj) if obj else []

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        if change:
            obj.save()
            return
        data = form.cleaned_data
        tenant = tenant_create(
            slug=data["schema_name"],
            name=data["name"],
            owner_email=data["owner_email"],
            owner_password=data["owner_password"],
            **{field: data[field] for field in Tenant.LIMIT_FIELDS},
        )
        admin_adopt(obj, tenant)

    def delete_model(self, request: HttpRequest, obj: Tenant) -> None:
        tenant_delete(tenant=obj)

    def has_delete_permission(self, request: HttpRequest, obj: Tenant | None = None) -> bool:
        return super().has_delete_permission(request, obj) and not (obj and obj.is_platform)

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: Tenant) -> str:
        colour = "#2e7d32" if obj.is_active else "#c62828"
        return format_html('<strong style="color:{}">{}</strong>', colour, obj.get_status_display())

    @admin.display(description="Site")
    def site_link(self, obj: Tenant) -> str:
        url = obj.url()
        return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, url)

    @admin.action(description="Suspend selected tenants (403 everywhere, data kept)")
    def suspend_selected(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            tenant_suspend(tenant=tenant, reason=f"suspended by {request.user.email}")
        self.message_user(request, f"Suspended {queryset.count()} tenant(s).", messages.SUCCESS)

    @admin.action(description="Reactivate selected tenants")
    def activate_selected(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset:
            tenant_activate(tenant=tenant)
        self.message_user(request, f"Reactivated {queryset.count()} tenant(s).", messages.SUCCESS)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        # Django's "delete selected" action lands here: drop each schema through the service.
        for tenant in queryset:
            tenant_delete(tenant=tenant)


@admin.register(Domain, site=platform_admin_site)
class DomainAdmin(admin.ModelAdmin):
    list_display = ["domain", "tenant", "is_primary"]
    list_filter = ["is_primary"]
    search_fields = ["domain", "tenant__schema_name", "tenant__name"]
    autocomplete_fields = ["tenant"]
