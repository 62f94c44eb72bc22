"""`Idempotency-Key` on POSTs that start runs or store uploads: the first request runs and its answer is
kept; a retry with the same key and body gets the same answer (marked `Idempotent-Replayed: true`) and
nothing runs twice. Reusing a key for a different request is refused (422); a retry while the first is
still running is refused (409) rather than run in parallel. Failed requests are not kept, so they can be
retried."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.http import HttpResponseBase
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework.request import Request
from rest_framework.response import Response

from api.models import ApiKey, IdempotentRequest
from nexent_site.errors import ApplicationError

HEADER = "Idempotency-Key"
# The header as the OpenAPI schema describes it, for every view that honours it.
IDEMPOTENCY_KEY_PARAMETER = OpenApiParameter(
    HEADER,
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    required=False,
    description="Up to 255 characters, one per request you mean to make once: a retry with the same key and "
    "body gets the first answer instead of doing it twice",
)


def _fingerprint(request: Request) -> str:
    digest = hashlib.sha256()
    digest.update(f"{request.method} {request.path}?{request.META.get('QUERY_STRING', '')}\n".encode())
    data = request.data
    items = data.lists() if hasattr(data, "lists") else (data.items() if isinstance(data, dict) else [("", data)])
    for name, value in sorted(items, key=lambda item: str(item[0])):
        values = value if isinstance(value, list) else [value]
        for each in values:
            if isinstance(each, UploadedFile):
                digest.update(f"{name}=file:{each.name}:{each.size}\n".encode())
                for chunk in each.chunks():
                    digest.update(chunk)
                each.seek(0)
            else:
                digest.update(f"{name}={json.dumps(each, sort_keys=True, default=str)}\n".encode())
    return digest.hexdigest()


def _owner(request: Request) -> str:
    if isinstance(request.auth, ApiKey):
        return f"key:{request.auth.pk}"
    return f"user:{request.user.pk}"


def _claim(request: Request, key: str) -> tuple[IdempotentRequest, bool]:
    return idempotency_claim(
        owner=_owner(request), key=key, method=request.method, path=request.path, fingerprint=_fingerprint(request)
    )


def idempotency_claim(
    *, owner: str, key: str, method: str, path: str, fingerprint: str
) -> tuple[IdempotentRequest, bool]:
    """(record, True) for the first request with this key; (the finished record, False) for a retry of it.
    ApplicationError 422 when the key was used for another request, 409 while the first is in progress."""
    if not key or len(key) > 255:
        raise ApplicationError(f"{HEADER} must be 1 to 255 characters.", code="invalid_idempotency_key")
    expired = timezone.now() - timedelta(hours=settings.API_IDEMPOTENCY_TTL_HOURS)
    IdempotentRequest.objects.filter(owner=owner, key=key, created_at__lt=expired).delete()
    try:
        with transaction.atomic():
            return IdempotentRequest.objects.create(
                owner=owner, key=key, method=method, path=path[:500], fingerprint=fingerprint
            ), True
    except IntegrityError:
        existing = IdempotentRequest.objects.get(owner=owner, key=key)
        if existing.fingerprint != fingerprint:
            raise ApplicationError(
                f"This {HEADER} was used for a different request; use a new key for a new request.",
                code="idempotency_key_reused",
                status=422,
            ) from None
        if existing.state == IdempotentRequest.State.PROCESSING:
            raise ApplicationError(
                f"A request with this {HEADER} is still being processed; retry in a moment.",
                code="idempotency_in_progress",
                status=409,
            ) from None
        return existing, False


def idempotent(replay_stream: Callable[[Any, Request, IdempotentRequest], HttpResponseBase] | None = None) -> Any:
    """Decorate a view's `post`/`create`. A streaming answer records its run (`response.run_id`);
    `replay_stream(view, request, record)` streams that run again for a retry."""

    def decorator(method: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
        @wraps(method)
        def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
            key = request.headers.get(HEADER, "").strip()
            if not key:
                return method(view, request, *args, **kwargs)
            record, fresh = _claim(request, key)
            if not fresh:
                if record.run_id and record.response is None and replay_stream is not None:
                    response = replay_stream(view, request, record)
                else:
                    response = Response(record.response, status=record.status_code)
                response["Idempotent-Replayed"] = "true"
                return response
            try:
                response = method(view, request, *args, **kwargs)
            except BaseException:
                record.delete()
                raise
            if response.status_code >= 400:
                record.delete()
                return response
            record.state, record.status_code = IdempotentRequest.State.DONE, response.status_code
            record.run_id = getattr(response, "run_id", None)
            record.response = response.data if isinstance(response, Response) else None
            record.save(update_fields=["state", "status_code", "run_id", "response"])
            return response

        return wrapper

    return decorator


def idempotent_requests_purge() -> int:
    """Forget answers older than API_IDEMPOTENCY_TTL_HOURS (in the current tenant). Returns how many."""
    expired = timezone.now() - timedelta(hours=settings.API_IDEMPOTENCY_TTL_HOURS)
    deleted, _ = IdempotentRequest.objects.filter(created_at__lt=expired).delete()
    return deleted
