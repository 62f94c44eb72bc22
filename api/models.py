"""API keys and stored idempotent answers, in the tenant's own schema: a key of one tenant does not exist in
another tenant's schema, so it is refused there."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class ApiKey(models.Model):
    """A tenant's API key. Only its SHA-256 is stored; the key itself is shown once, at creation. `prefix`
    (the key's first characters) is stored in clear so people can tell their keys apart."""

    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="api_keys",
        help_text="The key acts as this user: conversations it starts are theirs, and its scopes can't exceed "
        "what their role allows.",
    )
    scopes = models.JSONField(default=list)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires")
    requests_per_minute = models.PositiveIntegerField(default=0, help_text="0 = only the organisation's limit applies")
    monthly_token_limit = models.PositiveBigIntegerField(
        default=0, help_text="Tokens per calendar month for this key. 0 = only the organisation's budget applies"
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_usable(self) -> bool:
        return self.revoked_at is None and not self.is_expired


class IdempotentRequest(models.Model):
    """A POST sent with an `Idempotency-Key` header: the first one runs and its answer is stored; a retry with
    the same key and the same body gets that answer again instead of running twice."""

    class State(models.TextChoices):
        PROCESSING = "processing", "Processing"
        DONE = "done", "Done"

    owner = models.CharField(max_length=40, help_text="key:<id> or user:<id>")
    key = models.CharField(max_length=255)
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=500)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of the request body and query")
    state = models.CharField(max_length=16, choices=State.choices, default=State.PROCESSING)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    response = models.JSONField(null=True, blank=True)
    run_id = models.UUIDField(null=True, blank=True, help_text="The run a streamed answer followed")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="unique_idempotency_key_per_owner")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} [{self.key}]"
