from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html

from files.models import StoredFile
from files.services import file_delete, file_store
from nexent_site.admin_sites import admin_adopt, tenant_admin_site
from nexent_site.errors import ApplicationError


class UploadForm(forms.ModelForm):
    upload = forms.FileField(help_text="Type is detected from the content; size and storage limits apply.")

    class Meta:
        model = StoredFile
        fields: list[str] = []

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("upload"):
            try:
                self.stored = file_store(upload=data["upload"], owner=self.request_user)
            except ApplicationError as exc:
                raise ValidationError({"upload": exc.message}) from None
        return data


@admin.register(StoredFile, site=tenant_admin_site)
class StoredFileAdmin(admin.ModelAdmin):
    list_display = ["original_name", "human_size", "content_type", "owner", "created_at", "download"]
    list_filter = ["content_type", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["original_name", "sha256", "owner__email"]
    readonly_fields = ["original_name", "human_size", "content_type", "sha256", "owner", "created_at", "download"]

    def get_form(self, request: HttpRequest, obj: StoredFile | None = None, **kwargs: Any) -> Any:
        if obj is None:
            form = type("BoundUploadForm", (UploadForm,), {"request_user": request.user})
            kwargs["form"] = form
            kwargs["fields"] = ["upload"]
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: StoredFile | None = None) -> Any:
        return ["upload"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request: HttpRequest, obj: StoredFile | None = None) -> Any:
        return [] if obj is None else self.readonly_fields

    def has_change_permission(self, request: HttpRequest, obj: StoredFile | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: StoredFile, form: Any, change: bool) -> None:
        stored = form.stored  # written by the form's clean through the service
        admin_adopt(obj, stored)

    def delete_model(self, request: HttpRequest, obj: StoredFile) -> None:
        file_delete(stored_file=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[StoredFile]) -> None:
        for stored_file in queryset:
            file_delete(stored_file=stored_file)

    @admin.display(description="Size", ordering="size")
    def human_size(self, obj: StoredFile) -> str:
        return filesizeformat(obj.size)

    @admin.display(description="")
    def download(self, obj: StoredFile) -> str:
        return format_html('<a href="{}">Download</a>', reverse("file_download", args=[obj.pk]))
