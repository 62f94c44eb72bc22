"""The storage for uploads (django-storages): local disk under MEDIA_ROOT by default, S3/MinIO when
FILES_S3_BUCKET is set. Keys are always `<tenant schema>/<file id>`: nothing of the client's file name
reaches the path, so `../` or guessed names lead nowhere."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.core.files.storage import FileSystemStorage, Storage


@cache
def files_storage() -> Storage:
    if settings.FILES_S3_BUCKET:
        from storages.backends.s3 import S3Storage

        return S3Storage(
            bucket_name=settings.FILES_S3_BUCKET,
            endpoint_url=settings.FILES_S3_ENDPOINT_URL or None,
            access_key=settings.FILES_S3_ACCESS_KEY or None,
            secret_key=settings.FILES_S3_SECRET_KEY or None,
            region_name=settings.FILES_S3_REGION or None,
            location=settings.FILES_S3_PREFIX,
            default_acl=None,
            querystring_auth=True,
            querystring_expire=settings.FILES_SIGNED_URL_TTL_S,
            file_overwrite=False,
        )
    return FileSystemStorage(location=settings.FILES_ROOT)


def storage_key(schema_name: str, file_id: str) -> str:
    return f"{schema_name}/{file_id}"


def storage_delete_tenant(schema_name: str) -> int:
    """Delete every stored object of a tenant (its whole `<schema>/` prefix). Returns how many."""
    storage = files_storage()
    deleted = 0
    try:
        _, names = storage.listdir(schema_name)
    except FileNotFoundError:
        return 0
    for name in names:
        storage.delete(f"{schema_name}/{name}")
        deleted += 1
    return deleted
