import time

from celery import shared_task
from django.conf import settings
from django.db import connection

from accounts.models import User


@shared_task(name="tenants.tasks.platform_heartbeat", ignore_result=True)
def platform_heartbeat() -> None:
    """Scheduled by beat: proves to /healthz that the scheduler and a worker are both alive."""
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        client.set("nexent:heartbeat", time.time(), ex=300)
    finally:
        client.close()


@shared_task(name="tenants.tasks.tenant_probe")
def tenant_probe() -> dict:
    """Runs in the schema of the tenant that enqueued it; reports what it sees there (for `tenant_check`)."""
    return {
        "schema": connection.schema_name,
        "users": User.objects.count(),
        "owners": sorted(User.objects.filter(role=User.Role.OWNER).values_list("email", flat=True)),
    }
