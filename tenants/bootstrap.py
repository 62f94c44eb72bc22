"""First-run set-up, safe to run on every start: the platform row, a platform superuser, the demo tenant.

Credentials come from NEXENT_ADMIN_EMAIL / NEXENT_ADMIN_PASSWORD when set; otherwise they are generated
once and kept in `.data/credentials` (mode 600). The same e-mail and password are used for the platform
superuser (public schema) and the demo tenant's owner (demo schema): two separate accounts.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from django.conf import settings
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from accounts.services import platform_superuser_ensure
from agents.services.demo import demo_agents_ensure
from agents.services.providers import providers_ensure_defaults
from knowledge.services.demo import demo_handbook_ensure
from tenants.models import Tenant
from tenants.services import platform_tenant_ensure, tenant_create

DEMO_SLUG = "demo"


@dataclass
class Credentials:
    email: str
    password: str
    source: str  # "environment", "generated" or "file"


def credentials_path() -> Path:
    return Path(settings.DATA_DIR) / "credentials"


def credentials_load() -> Credentials:
    email, password = os.environ.get("NEXENT_ADMIN_EMAIL"), os.environ.get("NEXENT_ADMIN_PASSWORD")
    if email and password:
        return Credentials(email=email, password=password, source="environment")
    path = credentials_path()
    if path.exists():
        data = json.loads(path.read_text())
        return Credentials(email=data["email"], password=data["password"], source="file")
    creds = Credentials(email=email or "admin@example.com", password=secrets.token_urlsafe(12), source="generated")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"email": creds.email, "password": creds.password}, handle)
    path.chmod(0o600)
    return creds


@dataclass
class BootstrapResult:
    credentials: Credentials
    superuser_created: bool
    demo_created: bool
    demo_url: str

    def as_dict(self) -> dict:
        return asdict(self)


def platform_bootstrap() -> BootstrapResult:
    """Idempotent: creates only what is missing and never changes an existing password."""
    creds = credentials_load()
    platform_tenant_ensure()
    with schema_context(get_public_schema_name()):
        _, superuser_created = platform_superuser_ensure(email=creds.email, password=creds.password)
        demo = Tenant.objects.filter(schema_name=DEMO_SLUG).first()
    demo_created = demo is None
    if demo is None:
        demo = tenant_create(slug=DEMO_SLUG, name="Demo", owner_email=creds.email, owner_password=creds.password)
    with tenant_context(demo):
        providers_ensure_defaults()
        handbook = demo_handbook_ensure()
        demo_agents_ensure(handbook=handbook.slug if handbook else None)
    return BootstrapResult(
        credentials=creds, superuser_created=superuser_created, demo_created=demo_created, demo_url=demo.url()
    )
