from celery import shared_task

from api.idempotency import idempotent_requests_purge
from tenants.sweep import tenants_sweep


@shared_task(name="api.tasks.idempotency_purge", ignore_result=True)
def idempotency_purge() -> None:
    """Scheduled by beat: forget expired Idempotency-Key answers in every tenant."""
    tenants_sweep(idempotent_requests_purge, active_only=False)
