import time

from celery import shared_task
from django.db import connection

from accounts.models import User

HEARTBEAT_KEYS = {"chat": "nexent:heartbeat", "background": "nexent:heartbeat:background"}


def _heartbeat(queue_role: str) -> None:
    from nexent_site.redis_pool import redis_client

    redis_client().set(HEARTBEAT_KEYS[queue_role], time.time(), ex=24 * 3600)


@shared_task(name="tenants.tasks.platform_heartbeat", ignore_result=True)
def platform_heartbeat() -> None:
    """Scheduled by beat, on the chat queue: proves to /healthz that the scheduler and a chat worker are alive."""
    _heartbeat("chat")


@shared_task(name="tenants.tasks.background_heartbeat", ignore_result=True)
def background_heartbeat() -> None:
    """Scheduled by beat, on the background queue: proves to /healthz that a worker takes tasks from it."""
    _heartbeat("background")


@shared_task(name="tenants.tasks.tenant_probe")
def tenant_probe() -> dict:
    """Runs in the schema of the tenant that enqueued it; reports what it sees there (for `tenant_check`)."""
    return {
        "schema": connection.schema_name,
        "users": User.objects.count(),
        "owners": sorted(User.objects.filter(role=User.Role.OWNER).values_list("email", flat=True)),
    }
