"""Stored files: one record per upload, in the tenant's schema; the bytes live in the configured storage
(local disk by default, S3/MinIO when configured) under a per-tenant prefix."""

import uuid

from django.conf import settings
from django.db import models


class StoredFile(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="files"
    )
    original_name = models.CharField(max_length=255)
    size = models.PositiveBigIntegerField()
    content_type = models.CharField(max_length=150, help_text="Sniffed from the bytes, not taken from the client")
    sha256 = models.CharField(max_length=64, db_index=True)
    storage_key = models.CharField(max_length=500, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.original_name
