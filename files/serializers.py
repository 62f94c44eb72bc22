"""REST API shapes of stored files."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from api.serializers import StrictSerializer
from files.models import StoredFile
from files.services import file_signed_url


class FileSerializer(serializers.ModelSerializer):
    name = serializers.CharField(source="original_name", read_only=True)
    owner = serializers.EmailField(source="owner.email", read_only=True, allow_null=True)

    class Meta:
        model = StoredFile
        fields = ["id", "name", "size", "content_type", "sha256", "owner", "created_at"]
        read_only_fields = fields


class FileDetailSerializer(FileSerializer):
    download_url = serializers.SerializerMethodField(help_text="Downloads the file without a key, until it expires")
    download_url_expires_at = serializers.SerializerMethodField()

    class Meta(FileSerializer.Meta):
        fields = [*FileSerializer.Meta.fields, "download_url", "download_url_expires_at"]
        read_only_fields = fields

    @extend_schema_field(serializers.URLField())
    def get_download_url(self, stored_file: StoredFile) -> str:
        url = file_signed_url(stored_file=stored_file)
        request = self.context.get("request")
        return request.build_absolute_uri(url) if request is not None else url

    @extend_schema_field(serializers.DateTimeField())
    def get_download_url_expires_at(self, stored_file: StoredFile) -> str:
        expires = timezone.now() + timedelta(seconds=settings.FILES_SIGNED_URL_TTL_S)
        return serializers.DateTimeField().to_representation(expires)


class FileUploadSerializer(StrictSerializer):
    file = serializers.FileField(allow_empty_file=True, help_text="The file (its type is sniffed from the bytes)")
