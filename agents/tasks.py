from typing import Any

from celery import shared_task

from agents.services.runs import RunMustWait, run_execute, runs_watchdog
from tenants.sweep import tenants_sweep


@shared_task(name="agents.tasks.agent_run_execute", acks_late=True, bind=True, max_retries=None)
def agent_run_execute(self: Any, run_id: str) -> str | None:
    """Execute a queued run in the enqueuing tenant's schema. Safe to deliver twice. While the tenant has its
    most runs executing, or a provider the run uses is at its concurrency limit, the run stays queued and this
    task is tried again a moment later, leaving the worker's thread to other runs (the runs' watchdog ends a
    run queued too long)."""
    try:
        run = run_execute(run_id=run_id)
    except RunMustWait as busy:
        raise self.retry(countdown=busy.retry_in_s(self.request.retries)) from None
    return run.status if run else None


@shared_task(name="agents.tasks.agent_runs_watchdog", ignore_result=True)
def agent_runs_watchdog() -> None:
    """Scheduled by beat (in the public schema): close overdue runs in every active tenant."""
    tenants_sweep(runs_watchdog)
