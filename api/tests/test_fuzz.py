"""Schema fuzzing: Schemathesis generates requests from the OpenAPI schema at /api/schema/ (valid and invalid
bodies, parameters, ids, content types) and sends them to the real ASGI server, with an API key of every
scope. No request may get a 5xx. Runs in a tenant of its own, deleted afterwards, because the fuzzer creates
and deletes whatever the schema allows. Nothing is faked (the agents it may run have a model provider that
points nowhere, so their runs fail fast, as they would in production)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import requests

from conftest import PASSWORD, Committed, host_of
from tenants.models import Tenant

pytestmark = pytest.mark.django_db
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"


@pytest.fixture
def fuzz_tenant(committed: Committed) -> Any:
    from tenants.services import tenant_create, tenant_delete

    public = Tenant.objects.get(schema_name="public")
    tenant = committed.run(
        public,
        lambda: tenant_create(slug="fuzz", name="Fuzz", owner_email="owner@fuzz.test", owner_password=PASSWORD),
    )
    committed.run(public, lambda: Tenant.objects.filter(pk=tenant.pk).update(api_requests_per_minute=0))
    committed.on_teardown(public, lambda: tenant_delete(tenant=Tenant.objects.get(pk=tenant.pk)))
    return tenant


def test_no_generated_request_gets_a_server_error(
    asgi_server: dict, committed_key: Any, fuzz_tenant: Tenant, tmp_path: Path
) -> None:
    # given: the schema, as the server publishes it, and an admin key
    port, host = asgi_server["port"], host_of(fuzz_tenant)
    schema = requests.get(f"http://127.0.0.1:{port}/api/schema/?format=json", headers={"Host": host}, timeout=30)
    assert schema.status_code == 200 and schema.json()["openapi"].startswith("3.")
    (tmp_path / "schema.json").write_text(schema.text)
    key = committed_key(fuzz_tenant, scopes="admin", email="owner@fuzz.test")

    # when
    result = subprocess.run(
        [
            str(SCHEMATHESIS),
            "run",
            str(tmp_path / "schema.json"),
            f"--url=http://127.0.0.1:{port}",
            f"--header=Host: {host}",
            f"--header=Authorization: Bearer {key}",
            "--checks=not_a_server_error",
            f"--max-examples={os.environ.get('FUZZ_MAX_EXAMPLES', '15')}",
            "--phases=examples,coverage,fuzzing",
            "--workers=2",
            "--seed=20261122",
            "--request-timeout=30",
            "--no-color",
            "--suppress-health-check=all",
            "--generation-database=none",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
    )

    # then
    assert result.returncode == 0, (result.stdout + result.stderr)[-8000:]
    tested = re.search(r"Tested: (\d+)", result.stdout)
    assert tested and int(tested.group(1)) >= 40, result.stdout[-3000:]  # every REST operation was exercised
    assert re.search(r"(\d+) generated, \1 passed", result.stdout), result.stdout[-3000:]
