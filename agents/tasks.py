from typing import Any

from celery import shared_task

from agents.services.runs import RunMustWait, run_execute, run_from_handoff, run_wait_for_slot, runs_watchdog
from tenants.sweep import tenants_sweep


@shared_task(name="agents.tasks.agent_run_execute", acks_late=True, bind=True, max_retries=None)
def agent_run_execute(self: Any, run_id: str, woken_since: float | None = None, run: dict | None = None) -> str | None:
    """Execute a queued run in the enqueuing tenant's schema. Safe to deliver twice. While the tenant has its
    most runs executing, or a provider the run uses is at its concurrency limit, the run stays queued and waits in
    line: this task is sent again when a run holding the slot ends (`woken_since`: the run's first wait), and
    tried again a moment later anyway, leaving the worker's thread to other runs (the runs' watchdog ends a run
    queued too long). `run`: the run as it was saved (`run_handoff`), started without being read first."""
    handed = run_from_handoff(run, run_id) if run is not None else None
    try:
        executed = run_execute(
            run_id=run_id, run=handed, read=handed is None, waited=bool(self.request.retries or woken_since)
        )
    except RunMustWait as busy:
        run_wait_for_slot(busy, run_id=run_id, task=self.name, args=[run_id], since=woken_since)
        if woken_since is not None:  # an extra try: the run's own tries go on
            return None
        raise self.retry(countdown=busy.retry_in_s(self.request.retries)) from None
    return executed.status if executed else None


@shared_task(name="agents.tasks.agent_runs_watchdog", ignore_result=True)
def agent_runs_watchdog() -> None:
    """Scheduled by beat (in the public schema): close overdue runs in every active tenant."""
    tenants_sweep(runs_watchdog)
