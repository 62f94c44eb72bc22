"""`GET /healthz` on any host: each dependency's status as JSON, 200 when every required one is up.

It is answered by a middleware placed before tenant resolution, so it works on unknown hosts and for
suspended tenants too, and never reveals anything about a tenant.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django_tenants.utils import get_public_schema_name

HEALTH_PATHS = {"/healthz", "/healthz/"}


def _timed(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = check()
    except Exception as exc:  # a health check reports failures; it never raises
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


def check_database() -> dict[str, Any]:
    connection.set_schema_to_public()
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('server_version')")
        (version,) = cursor.fetchone()
    return {"ok": True, "version": version}


def check_redis() -> dict[str, Any]:
    import redis

    from tenants.tasks import HEARTBEAT_KEYS

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
        heartbeat = client.get(HEARTBEAT_KEYS["chat"])
    finally:
        client.close()
    result: dict[str, Any] = {"ok": True}
    if heartbeat is not None:
        result["scheduler_heartbeat_age_s"] = round(time.time() - float(heartbeat), 1)
    return result


def check_celery() -> dict[str, Any]:
    from nexent_site.celery import app

    # limit=1 returns at the first reply instead of waiting out the whole timeout.
    replies = app.control.ping(timeout=settings.HEALTH_CELERY_TIMEOUT, limit=1)
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        return {"ok": False, "error": "no Celery worker answered"}
    return {"ok": True, "workers": workers}


def check_queues() -> dict[str, Any]:
    """Each Celery queue: the tasks waiting in it, and how long ago a worker last took beat's heartbeat from it.
    Not required: a background queue that nobody consumes stops ingestion and titles, not the web or chats."""
    import redis
    from kombu.exceptions import ChannelError

    from nexent_site.celery import app
    from nexent_site.task_routes import background_queue, chat_queue
    from tenants.tasks import HEARTBEAT_KEYS

    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    queues: dict[str, dict[str, Any]] = {}
    try:
        with app.connection_for_read(connect_timeout=2) as broker:
            broker.ensure_connection(max_retries=1)  # a broker that is down is reported, not waited for
            channel = broker.default_channel
            for role, name in (("chat", chat_queue()), ("background", background_queue())):
                try:
                    waiting = channel.queue_declare(queue=name, passive=True).message_count
                except ChannelError:  # Redis keeps no empty queue
                    waiting = 0
                queues[role] = {"name": name, "waiting": waiting}
                beat = client.get(HEARTBEAT_KEYS[role])
                if beat is not None:
                    queues[role]["heartbeat_age_s"] = round(time.time() - float(beat), 1)
    finally:
        client.close()
    stale = [role for role, queue in queues.items() if queue.get("heartbeat_age_s", 0) > settings.HEALTH_QUEUE_STALE_S]
    if stale:
        problems = ", ".join(
            f"{role} ({queues[role]['heartbeat_age_s']:.0f} s ago, {queues[role]['waiting']} waiting)" for role in stale
        )
        return {"ok": False, "error": f"no worker took a task lately from: {problems}", "queues": queues}
    return {"ok": True, "queues": queues}


def check_search() -> dict[str, Any]:
    from knowledge.search import search_backend

    connection.set_schema_to_public()
    return search_backend().health()


CHECKS: dict[str, Callable[[], dict[str, Any]]] = {
    "database": check_database,
    "redis": check_redis,
    "celery": check_celery,
    "queues": check_queues,
    "search": check_search,
}
REQUIRED = ("database", "redis", "celery", "search")


def health_report() -> tuple[bool, dict[str, Any]]:
    checks = {name: _timed(check) for name, check in CHECKS.items()}
    healthy = all(checks[name]["ok"] for name in REQUIRED)
    return healthy, {"status": "ok" if healthy else "unavailable", "checks": checks}


class HealthCheckMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path not in HEALTH_PATHS:
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            return JsonResponse({"error": "method not allowed"}, status=405)
        healthy, report = health_report()
        if connection.schema_name != get_public_schema_name():
            connection.set_schema_to_public()
        response = JsonResponse(report, status=200 if healthy else 503)
        response["Cache-Control"] = "no-store"
        return response
