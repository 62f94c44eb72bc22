import pytest
from django.test import Client, override_settings

from conftest import host_of
from tenants.models import Tenant


@pytest.mark.django_db
@pytest.mark.parametrize("host", ["localhost", "alpha.localhost", "gamma.localhost", "nosuch.localhost"])
def test_healthz_reports_every_dependency_on_any_host(client: Client, celery_worker: dict, host: str) -> None:
    # when
    response = client.get("/healthz", HTTP_HOST=host)

    # then
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    checks = body["checks"]
    assert set(checks) == {"database", "redis", "celery", "search"}
    assert all(check["ok"] for check in checks.values())
    assert checks["celery"]["workers"]
    assert checks["search"]["backend"] == "postgres"
    assert isinstance(checks["search"]["vector"], bool)


@pytest.mark.django_db
def test_healthz_is_503_with_the_reason_when_a_dependency_is_down(client: Client, tenant_a: Tenant) -> None:
    # given: a Redis nobody listens on
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0", HEALTH_CELERY_TIMEOUT=0.2):
        response = client.get("/healthz", HTTP_HOST=host_of(tenant_a))

    # then
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"]["ok"] is False
    assert "Connection" in body["checks"]["redis"]["error"]
    assert body["checks"]["database"]["ok"] is True
    assert "Traceback" not in response.content.decode()


@pytest.mark.django_db
def test_healthz_refuses_writes(client: Client) -> None:
    assert client.post("/healthz", HTTP_HOST="localhost").status_code == 405
