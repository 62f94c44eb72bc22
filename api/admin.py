from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html

from agents.models import UsageRecord
from api.forms import ApiKeyChangeForm, ApiKeyCreateForm
from api.models import ApiKey
from api.services import apikey_create, apikey_revoke
from api.usage import USAGE_CHART_DAYS, usage_dashboard
from nexent_site.admin_sites import tenant_admin_site


@admin.register(ApiKey, site=tenant_admin_site)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix_shown", "user", "scopes_shown", "state", "last_used_at", "expires_at", "created_at"]
    list_filter = ["revoked_at", "expires_at", "user"]
    search_fields = ["name", "prefix", "user__email"]
    readonly_fields = ["prefix_shown", "user", "scopes_shown", "state", "last_used_at", "revoked_at", "created_at"]
    actions = ["revoke"]

    def get_form(self, request: HttpRequest, obj: ApiKey | None = None, change: bool = False, **kwargs: Any) -> Any:
        kwargs["form"] = ApiKeyChangeForm if obj else ApiKeyCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        return self.readonly_fields if obj else []

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        if obj is None:
            return list(ApiKeyCreateForm.Meta.fields)
        return [
            "name",
            "prefix_shown",
            "user",
            "scopes_shown",
            "state",
            *ApiKeyChangeForm.Meta.fields[1:],
            "last_used_at",
            "revoked_at",
            "created_at",
        ]

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        data = form.cleaned_data
        key, raw = apikey_create(
            user=data["user"],
            name=data["name"],
            scopes=data["scopes"],
            expires_at=data.get("expires_at"),
            requests_per_minute=data.get("requests_per_minute") or 0,
            monthly_token_limit=data.get("monthly_token_limit") or 0,
        )
        form.instance = obj = key
        obj.pk = key.pk
        messages.warning(
            request,
            format_html(
                "Copy this key now: it is not stored and will not be shown again.<br>"
                "<code style='user-select:all'>{}</code>",
                raw,
            ),
        )

    @admin.display(description="Key")
    def prefix_shown(self, obj: ApiKey) -> str:
        return f"{obj.prefix}_…"

    @admin.display(description="Scopes")
    def scopes_shown(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="State")
    def state(self, obj: ApiKey) -> str:
        if obj.revoked_at:
            return format_html('<strong style="color:{}">{}</strong>', "#c62828", "revoked")
        if obj.is_expired:
            return format_html('<strong style="color:{}">{}</strong>', "#b45309", "expired")
        return format_html('<strong style="color:{}">{}</strong>', "#2e7d32", "active")

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            apikey_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s); they stop working at once.", messages.SUCCESS)


@admin.register(UsageRecord, site=tenant_admin_site)
class UsageRecordAdmin(admin.ModelAdmin):
    """Token usage per run, with charts (per day, per agent) and this month's quota consumption above the
    list. Records are written by the runs themselves: read-only here."""

    change_list_template = "admin/agents/usagerecord/change_list.html"
    list_display = [
        "created_at",
        "agent_slug",
        "user_email",
        "api_key",
        "trigger",
        "tokens_in",
        "tokens_out",
        "estimated",
        "run",
    ]
    list_filter = ["trigger", "agent_slug", "api_key", "estimated", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["agent_slug", "user_email", "api_key__name", "api_key__prefix"]
    date_hierarchy = "created_at"
    list_select_related = ["api_key", "run"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: UsageRecord | None = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> Any:
        since = (timezone.now() - timedelta(days=USAGE_CHART_DAYS - 1)).date()
        extra_context = {**(extra_context or {}), **usage_dashboard(since=since)}
        return super().changelist_view(request, extra_context=extra_context)
