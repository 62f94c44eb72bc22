import io
import json
import stat
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import override_settings
from django_tenants.utils import schema_exists, tenant_context

from accounts.models import User
from agents.models import Agent
from conftest import PASSWORD
from tenants.models import Tenant


@pytest.mark.django_db
def test_tenant_create_command_creates_a_working_tenant() -> None:
    out = io.StringIO()
    call_command(
        "tenant_create",
        "--slug",
        "cmdco",
        "--name",
        "Cmd Co",
        "--owner-email",
        "o@cmdco.test",
        "--owner-password",
        PASSWORD,
        "--max-users",
        "3",
        stdout=out,
    )
    assert "http://cmdco.localhost:8000/" in out.getvalue()
    tenant = Tenant.objects.get(schema_name="cmdco")
    assert tenant.max_users == 3 and schema_exists("cmdco")
    with tenant_context(tenant):
        assert User.objects.get().role == "owner"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("slug", "message"), [("Bad_Slug", "slug: Use 1-32 lowercase"), ("www", "slug: “www” is reserved")]
)
def test_tenant_create_command_reports_a_field_error(slug: str, message: str) -> None:
    with pytest.raises(CommandError) as excinfo:
        call_command(
            "tenant_create", "--slug", slug, "--name", "X", "--owner-email", "o@x.test", "--owner-password", PASSWORD
        )
    assert message in str(excinfo.value)
    assert not Tenant.objects.filter(schema_name=slug).exists()


@pytest.mark.django_db
def test_user_create_command_adds_a_user_with_a_role(tenant_a: Tenant, tenant_b: Tenant) -> None:
    call_command(
        "user_create", "--tenant", "alpha", "--email", "Ann@Alpha.test", "--role", "admin", "--password", PASSWORD
    )
    with tenant_context(tenant_a):
        ann = User.objects.get(email="ann@alpha.test")
        assert (ann.role, ann.is_staff) == ("admin", True)
    with tenant_context(tenant_b):
        assert not User.objects.filter(email="ann@alpha.test").exists()


@pytest.mark.django_db
def test_user_create_command_errors(tenant_a: Tenant) -> None:
    with pytest.raises(CommandError, match="No tenant with slug 'nope'"):
        call_command("user_create", "--tenant", "nope", "--email", "a@b.test", "--password", PASSWORD)
    with pytest.raises(CommandError, match="password:"):
        call_command("user_create", "--tenant", "alpha", "--email", "a@b.test", "--password", "short")
    with pytest.raises(CommandError, match="email: A user with this e-mail already exists"):
        call_command("user_create", "--tenant", "alpha", "--email", "OWNER@alpha.test", "--password", PASSWORD)


@pytest.mark.django_db
def test_bootstrap_is_idempotent_and_keeps_generated_credentials_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEXENT_ADMIN_EMAIL", raising=False)
    monkeypatch.delenv("NEXENT_ADMIN_PASSWORD", raising=False)
    with override_settings(DATA_DIR=tmp_path):
        first, second = io.StringIO(), io.StringIO()
        call_command("bootstrap", stdout=first)
        call_command("bootstrap", stdout=second)

    creds_file = tmp_path / "credentials"
    creds = json.loads(creds_file.read_text())
    assert stat.S_IMODE(creds_file.stat().st_mode) == 0o600
    assert creds["password"] in first.getvalue()  # printed once, when generated
    assert creds["password"] not in second.getvalue()
    assert "existing accounts kept" in second.getvalue()
    demo = Tenant.objects.get(schema_name="demo")
    with tenant_context(demo):
        owner = User.objects.get(email=creds["email"])
        assert owner.role == "owner" and owner.check_password(creds["password"])
        # the demo's agents, published once: a chat-mode one answering from the handbook, a tools-mode one
        published = {a.slug: a.published_version.spec for a in Agent.objects.exclude(published_version=None)}
        assert set(published) == {"handbook", "assistant"}
        assert published["handbook"]["mode"] == "chat"
        assert published["handbook"]["tools"] == [
            {"tool": "knowledge_search", "config": {"knowledge_bases": ["handbook"], "top_k": 5}}
        ]
        assert published["assistant"]["mode"] == "tools"
        assert Agent.objects.get(slug="handbook").versions.count() == 1  # the second bootstrap changed nothing
    superuser = User.objects.get(email=creds["email"])  # public schema
    assert superuser.is_superuser and superuser.check_password(creds["password"])


@pytest.mark.django_db
def test_bootstrap_uses_credentials_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXENT_ADMIN_EMAIL", "ops@example.com")
    monkeypatch.setenv("NEXENT_ADMIN_PASSWORD", PASSWORD)
    with override_settings(DATA_DIR=tmp_path):
        out = io.StringIO()
        call_command("bootstrap", stdout=out)
    assert PASSWORD not in out.getvalue()
    assert not (tmp_path / "credentials").exists()
    assert User.objects.get(email="ops@example.com").check_password(PASSWORD)
