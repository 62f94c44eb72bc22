from celery import shared_task

from knowledge.services.documents import documents_dispatch
from knowledge.services.ingestion import document_ingest, documents_watchdog
from tenants.sweep import tenants_sweep


@shared_task(name="knowledge.tasks.document_ingest", acks_late=True, reject_on_worker_lost=True)
def document_ingest_task(document_id: int) -> str:
    """Ingest a document in the enqueuing tenant's schema. Safe to deliver twice: it resumes, or finds the
    document locked by the worker on it, or already done."""
    outcome = document_ingest(document_id=document_id)
    if outcome != "busy":  # its place is free (a busy document is still another worker's): the tenant's next one
        documents_dispatch()
    return outcome


@shared_task(name="knowledge.tasks.knowledge_watchdog", ignore_result=True)
def knowledge_watchdog() -> None:
    """Scheduled by beat (in the public schema): re-queue or fail stalled ingestions in every active tenant."""
    tenants_sweep(documents_watchdog)
