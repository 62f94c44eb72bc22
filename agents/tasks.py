from celery import shared_task
from django_tenants.utils import get_public_schema_name, get_tenant_model, tenant_context

from agents.services.runs import run_execute, runs_watchdog


@shared_task(name="agents.tasks.agent_run_execute", acks_late=True)
def agent_run_execute(run_id: str) -> str | None:
    """Execute a queued run in the enqueuing tenant's schema. Safe to deliver twice."""
    run = run_execute(run_id=run_id)
    return run.status if run else None


@shared_task(name="agents.tasks.agent_runs_watchdog", ignore_result=True)
def agent_runs_watchdog() -> None:
    """Scheduled by beat (in the public schema): close overdue runs in every active tenant."""
    tenants = get_tenant_model().objects.exclude(schema_name=get_public_schema_name()).filter(status="active")
    for tenant in tenants:
        with tenant_context(tenant):
            runs_watchdog()
