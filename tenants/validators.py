"""Tenant slug rules: a slug is both a DNS label (`<slug>.<base domain>`) and a PostgreSQL schema name."""

import re

from django.conf import settings
from django.core.exceptions import ValidationError

SLUG_MAX_LENGTH = 32
SLUG_RE = re.compile(rf"^[a-z](?:[a-z0-9-]{{0,{SLUG_MAX_LENGTH - 2}}}[a-z0-9])?$")


def validate_tenant_slug(value: str) -> None:
    """Lowercase letters, digits and single hyphens; starts with a letter; 1-32 characters; not reserved."""
    if not SLUG_RE.match(value or "") or "--" in value:
        raise ValidationError(
            "Use 1-%(max)d lowercase letters, digits or single hyphens, starting with a letter and not "
            "ending with a hyphen (it becomes the subdomain and the database schema).",
            code="invalid_slug",
            params={"max": SLUG_MAX_LENGTH},
        )
    if value in settings.RESERVED_TENANT_SLUGS or value.startswith("pg"):
        raise ValidationError(
            "“%(slug)s” is reserved; choose another slug.", code="reserved_slug", params={"slug": value}
        )
