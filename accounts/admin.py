from typing import Any

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import QuerySet
from django.http import HttpRequest

from accounts.forms import UserAddForm, UserChangeForm
from accounts.models import User
from accounts.services import platform_superuser_ensure, user_create, user_delete, user_update
from nexent_site.admin_sites import admin_adopt, platform_admin_site, tenant_admin_site


class _BaseUserAdmin(DjangoUserAdmin):
    form = UserChangeForm
    add_form = UserAddForm
    ordering = ["email"]
    search_fields = ["email", "full_name"]
    filter_horizontal: list[str] = []
    readonly_fields = ["last_login", "date_joined"]


@admin.register(User, site=tenant_admin_site)
class TenantUserAdmin(_BaseUserAdmin):
    """The tenant's own users. Owners manage everyone; admins manage admins and members."""

    list_display = ["email", "full_name", "role", "is_active", "last_login", "date_joined"]
    list_filter = ["role", "is_active"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Profile", {"fields": ["full_name", "role", "is_active"]}),
        ("Activity", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "full_name", "role", "password1", "password2"]})]

    def _is_owner(self, request: HttpRequest) -> bool:
        return getattr(request.user, "role", None) == User.Role.OWNER

    def has_change_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        if obj is not None and obj.role == User.Role.OWNER and not self._is_owner(request):
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: User | None = None) -> bool:
        if obj is not None and (
            obj.pk == request.user.pk or (obj.role == User.Role.OWNER and not self._is_owner(request))
        ):
            return False
        return super().has_delete_permission(request, obj)

    def formfield_for_choice_field(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "role" and not self._is_owner(request):
            kwargs["choices"] = [(v, label) for v, label in User.Role.choices if v != User.Role.OWNER]
        return super().formfield_for_choice_field(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        data = form.cleaned_data
        if change:
            user_update(user=obj, role=data["role"], is_active=data["is_active"], full_name=data["full_name"])
            if "email" in form.changed_data:
                obj.save(update_fields=["email"])
            return
        user = user_create(
            email=data["email"], password=data["password1"], role=data["role"], full_name=data.get("full_name", "")
        )
        admin_adopt(obj, user)

    def delete_model(self, request: HttpRequest, obj: User) -> None:
        user_delete(user=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        for user in queryset:
            user_delete(user=user)


@admin.register(User, site=platform_admin_site)
class PlatformUserAdmin(_BaseUserAdmin):
    """Platform staff (public schema). Tenant users are managed in each tenant's own admin."""

    list_display = ["email", "full_name", "is_active", "is_superuser", "last_login"]
    list_filter = ["is_active", "is_superuser"]
    fieldsets = [
        (None, {"fields": ["email", "password"]}),
        ("Profile", {"fields": ["full_name", "is_active"]}),
        ("Activity", {"fields": ["last_login", "date_joined"]}),
    ]
    add_fieldsets = [(None, {"classes": ["wide"], "fields": ["email", "full_name", "password1", "password2"]})]

    def get_form(self, request: HttpRequest, obj: User | None = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["fields"] = ["email", "full_name"]
        return super().get_form(request, obj, **kwargs)

    def save_model(self, request: HttpRequest, obj: User, form: Any, change: bool) -> None:
        if change:
            obj.save()
            return
        user, _ = platform_superuser_ensure(email=form.cleaned_data["email"], password=form.cleaned_data["password1"])
        if form.cleaned_data.get("full_name"):
            user.full_name = form.cleaned_data["full_name"]
            user.save(update_fields=["full_name"])
        admin_adopt(obj, user)
