"""The Celery app. Every task carries the schema of the tenant that enqueued it (tenant-schemas-celery).

Tasks should use `nexent_site.tenancy.TenantTask` as their base (it is this app's default), which also
refuses to run anything for a suspended tenant.
"""

import os
from typing import Any

from celery.signals import task_postrun, task_prerun, worker_init, worker_process_init, worker_ready
from tenant_schemas_celery.app import CeleryApp

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexent_site.settings")

app = CeleryApp("nexent", task_cls="nexent_site.tenancy:TenantTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _persistent_database_connections(**kwargs: Any) -> None:
    """A worker's threads keep their database connection between tasks. Closed after every task (Django's
    default CONN_MAX_AGE, and Celery's fix-up regardless of it), each task opened a new PostgreSQL connection
    first: 5-10 ms before a chat turn's first query. Only in workers: under ASGI each request has a thread of
    its own, so the web process uses a connection pool instead."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if not database.get("OPTIONS", {}).get("pool") and not database.get("CONN_MAX_AGE"):
        # connections read this dict when each thread opens its own, so the change reaches every task thread
        database["CONN_MAX_AGE"] = settings.WORKER_DATABASE_CONN_MAX_AGE
        database["CONN_HEALTH_CHECKS"] = True


@task_prerun.connect
@task_postrun.connect
def _close_old_database_connections(**kwargs: Any) -> None:
    """Around each task, as Django does around each request: close this thread's connections that are broken,
    left inside a transaction or older than CONN_MAX_AGE; keep the others (checked before their next use)."""
    from django.db import close_old_connections

    close_old_connections()


@worker_ready.connect
@worker_process_init.connect
def _process_ready(**kwargs: Any) -> None:
    """Once the worker has loaded the tasks (and in each child of a prefork pool): start-up's objects frozen, so
    the garbage collector's full passes stop every task thread for milliseconds, not hundreds of them (see
    nexent_site/process_ready.py)."""
    from nexent_site.process_ready import process_ready

    process_ready()
