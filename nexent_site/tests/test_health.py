import time
import uuid
from collections.abc import Iterator

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
    assert set(checks) == {"database", "redis", "celery", "queues", "search"}
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


@pytest.fixture
def heartbeats() -> Iterator[None]:
    """The heartbeat keys as they were, put back afterwards (the session's worker may take beat's heartbeats)."""
    from nexent_site.redis_pool import redis_client
    from tenants.tasks import HEARTBEAT_KEYS

    client = redis_client()
    saved = {key: client.get(key) for key in HEARTBEAT_KEYS.values()}
    yield
    for key, value in saved.items():
        client.set(key, value, ex=24 * 3600) if value is not None else client.delete(key)


@pytest.mark.django_db
def test_healthz_counts_the_tasks_waiting_in_each_queue_and_reports_a_queue_no_worker_takes_from(
    client: Client, own_queue: str, heartbeats: None
) -> None:
    """The tasks are real Celery messages on the real Redis broker; no worker consumes these queues."""
    from conversations.tasks import conversation_title_generate
    from nexent_site.redis_pool import redis_client
    from tenants.tasks import HEARTBEAT_KEYS, background_heartbeat, platform_heartbeat

    # given: three titles waiting in the background queue; both heartbeats just taken
    for _ in range(3):
        conversation_title_generate.delay(str(uuid.uuid4()))
    platform_heartbeat.run()
    background_heartbeat.run()

    # then
    response = client.get("/healthz", HTTP_HOST="localhost")
    queues = response.json()["checks"]["queues"]
    assert queues["ok"] is True
    assert queues["queues"]["chat"] | {"heartbeat_age_s": 0} == {
        "name": own_queue,
        "waiting": 0,
        "heartbeat_age_s": 0,
    }
    assert queues["queues"]["background"]["waiting"] == 3
    assert 0 <= queues["queues"]["background"]["heartbeat_age_s"] < 5

    # when: the background queue's heartbeat was last taken ten minutes ago (no background worker runs)
    redis_client().set(HEARTBEAT_KEYS["background"], time.time() - 600)

    # then: reported, with what waits; the platform still serves (the web and chats need no background worker)
    response = client.get("/healthz", HTTP_HOST="localhost")
    queues = response.json()["checks"]["queues"]
    assert queues["ok"] is False
    assert "background (600 s ago, 3 waiting)" in queues["error"]
    assert response.status_code == 200
