"""The Celery app. Every task carries the schema of the tenant that enqueued it (tenant-schemas-celery).

Tasks should use `nexent_site.tenancy.TenantTask` as their base (it is this app's default), which also
refuses to run anything for a suspended tenant.
"""

import os

from tenant_schemas_celery.app import CeleryApp

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "nexent_site.settings")

app = CeleryApp("nexent", task_cls="nexent_site.tenancy:TenantTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
