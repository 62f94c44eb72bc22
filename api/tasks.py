from celery import shared_task
from django_tenants.utils import get_public_schema_name, get_tenant_model, tenant_context

from api.idempotency import idempotent_requests_purge


@shared_task(name="api.tasks.idempotency_purge", ignore_result=True)
def idempotency_purge() -> None:
    """Scheduled by beat: forget expired Idempotency-Key answers in every tenant."""
    for tenant in get_tenant_model().objects.exclude(schema_name=get_public_schema_name()):
        with tenant_context(tenant):
            idempotent_requests_purge()
