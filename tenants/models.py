from django.conf import settings
from django.db import models
from django_tenants.models import DomainMixin, TenantMixin


def default_max_concurrent_runs() -> int:
    """A new tenant's `max_concurrent_runs` unless the platform admin sets another: TENANT_MAX_CONCURRENT_RUNS."""
    return settings.TENANT_MAX_CONCURRENT_RUNS


class Tenant(TenantMixin):
    """An isolated organisation: one PostgreSQL schema named by its slug, reached at `<slug>.<base domain>`.

    The row with schema `public` is the platform itself (landing page and platform admin).
    """

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        SUSPENDED = "suspended", "Suspended"

    # Deleting a tenant drops its schema; the platform admin asks for confirmation first.
    auto_create_schema = True
    auto_drop_schema = True

    name = models.CharField(max_length=200)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE, db_index=True)
    suspended_reason = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Limits enforced by later features (users, storage quota, token budget). 0 means unlimited.
    max_users = models.PositiveIntegerField(default=50, help_text="0 = unlimited")
    max_storage_bytes = models.PositiveBigIntegerField(default=10 * 1024**3, help_text="0 = unlimited")
    monthly_token_budget = models.PositiveBigIntegerField(default=5_000_000, help_text="0 = unlimited")
    api_requests_per_minute = models.PositiveIntegerField(
        default=600, help_text="REST, OpenAI-compatible and MCP requests per minute, all keys together. 0 = unlimited"
    )
    max_concurrent_runs = models.PositiveIntegerField(
        default=default_max_concurrent_runs,
        help_text="Agent runs (chat answers, API and MCP calls, the playground) executing at once; more wait their "
        "turn in the queue without holding a worker, so that one tenant cannot take every worker. 0 = unlimited",
    )

    LIMIT_FIELDS = (
        "max_users",
        "max_storage_bytes",
        "monthly_token_budget",
        "api_requests_per_minute",
        "max_concurrent_runs",
    )

    class Meta:
        ordering = ["schema_name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.schema_name})"

    @property
    def slug(self) -> str:
        return self.schema_name

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE

    @property
    def is_platform(self) -> bool:
        return self.schema_name == "public"

    def url(self) -> str:
        # from the (usually prefetched) domains: get_primary_domain() queries once per tenant
        domain = next((d for d in self.domains.all() if d.is_primary), None)
        host = domain.domain if domain else f"{self.schema_name}.{settings.NEXENT_BASE_DOMAIN}"
        port = "" if settings.NEXENT_PORT in (80, 443) else f":{settings.NEXENT_PORT}"
        return f"http://{host}{port}/"


class Domain(DomainMixin):
    class Meta:
        ordering = ["domain"]

    def __str__(self) -> str:
        return self.domain
