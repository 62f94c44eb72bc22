"""Uploads: checked (size, sniffed type, tenant quota), hashed and stored under the tenant's prefix."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.files.base import File
from django.db import connection, transaction
from django.db.models import Sum
from django.template.defaultfilters import filesizeformat
from django.urls import reverse

from files.models import StoredFile
from files.scanning import scan_upload
from files.sniffing import OLE2_TYPE, sniff_content_type
from files.storage import files_storage, storage_key
from nexent_site.errors import ApplicationError

SNIFF_BYTES = 65536


def _human(size: int) -> str:
    return filesizeformat(size).replace("\xa0", " ")


def tenant_storage_used() -> int:
    return StoredFile.objects.aggregate(total=Sum("size"))["total"] or 0


def file_store(*, upload: Any, owner: Any = None) -> StoredFile:
    """Store an uploaded file (anything with name, size and chunks()). Refused with a clear error, and
    nothing stored, when it is empty, too large, of a type not allowed, over the tenant's quota, or (with
    CLAMAV_URL set) infected or not checkable by the virus scanner."""
    name = (getattr(upload, "name", "") or "upload").rsplit("/", 1)[-1][:255]
    size = upload.size
    if not size:
        raise ApplicationError(f"“{name}” is empty.", code="empty_file")
    if size > settings.FILES_MAX_BYTES:
        raise ApplicationError(
            f"“{name}” is {_human(size)}; files may be at most {_human(settings.FILES_MAX_BYTES)}.",
            code="file_too_large",
            status=413,
        )
    upload.seek(0)
    head = upload.read(SNIFF_BYTES)
    content_type = sniff_content_type(head, name)
    if content_type == OLE2_TYPE:
        raise ApplicationError(
            f"“{name}” is a password-protected or legacy (.doc/.xls/.ppt) Office file; save it without a password "
            "as .docx, .xlsx or .pptx.",
            code="encrypted_office",
            status=415,
        )
    if content_type not in settings.FILES_ALLOWED_TYPES:
        raise ApplicationError(
            f"“{name}” is {content_type}, which is not accepted.", code="unsupported_type", status=415
        )
    quota = getattr(connection.tenant, "max_storage_bytes", 0)
    if quota and tenant_storage_used() + size > quota:
        raise ApplicationError(
            f"Storing “{name}” would exceed this organisation's {_human(quota)} of storage.",
            code="quota_exceeded",
            status=413,
        )
    if settings.CLAMAV_URL:
        scan_upload(upload, name)
    digest = hashlib.sha256()
    upload.seek(0)
    for chunk in upload.chunks() if hasattr(upload, "chunks") else iter(lambda: upload.read(1 << 20), b""):
        digest.update(chunk)
    upload.seek(0)
    file_id = uuid.uuid4()
    key = files_storage().save(storage_key(connection.schema_name, str(file_id)), File(upload))
    try:
        with transaction.atomic():
            return StoredFile.objects.create(
                id=file_id,
                owner=owner,
                original_name=name,
                size=size,
                content_type=content_type,
                sha256=digest.hexdigest(),
                storage_key=key,
            )
    except Exception:
        files_storage().delete(key)  # no orphaned bytes
        raise


def file_delete(*, stored_file: StoredFile) -> None:
    key = stored_file.storage_key
    stored_file.delete()
    transaction.on_commit(lambda: files_storage().delete(key))


def file_open(stored_file: StoredFile) -> File:
    return files_storage().open(stored_file.storage_key, "rb")


def _signer() -> signing.TimestampSigner:
    # The schema is part of the salt: a link made for one tenant means nothing on another's domain.
    return signing.TimestampSigner(salt=f"nexent.files.{connection.schema_name}")


def file_signed_url(*, stored_file: StoredFile) -> str:
    """A link that downloads the file without a session, for FILES_SIGNED_URL_TTL_S seconds."""
    return reverse("file_signed", args=[_signer().sign(str(stored_file.pk))])


def file_from_signed_token(token: str) -> StoredFile | None:
    try:
        file_id = _signer().unsign(token, max_age=settings.FILES_SIGNED_URL_TTL_S)
    except signing.BadSignature:
        return None
    return StoredFile.objects.filter(pk=file_id).first()
