from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet

from files.models import StoredFile


def file_get_for_user(*, file_id: Any, user: Any) -> StoredFile | None:
    """The file if `user` may download it: its owner, or the tenant's staff. None for anything else."""
    try:
        uuid.UUID(str(file_id))
    except ValueError:
        return None
    files = StoredFile.objects.all()
    if not user.is_staff:
        files = files.filter(owner=user)
    return files.filter(pk=file_id).first()


def files_visible_to(*, user: Any, whole_tenant: bool) -> QuerySet[StoredFile]:
    """The files a user may list: their own, or (`whole_tenant`, for the organisation's admins) every file."""
    files = StoredFile.objects.select_related("owner")
    return files if whole_tenant else files.filter(owner=user)
