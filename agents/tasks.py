from celery import shared_task

from agents.services.runs import run_execute, runs_watchdog
from tenants.sweep import tenants_sweep


@shared_task(name="agents.tasks.agent_run_execute", acks_late=True)
def agent_run_execute(run_id: str) -> str | None:
    """Execute a queued run in the enqueuing tenant's schema. Safe to deliver twice."""
    run = run_execute(run_id=run_id)
    return run.status if run else None


@shared_task(name="agents.tasks.agent_runs_watchdog", ignore_result=True)
def agent_runs_watchdog() -> None:
    """Scheduled by beat (in the public schema): close overdue runs in every active tenant."""
    tenants_sweep(runs_watchdog)
