"""Documents of a knowledge base: upload, (re)queue, retry, cancel, delete.

The web process only stores the file, writes the row and enqueues (on commit); workers do the rest.

**Each tenant gets its turn.** The workers' queue is first in, first out, so a tenant's upload of 200 files
would put 200 ingestions ahead of every other tenant's next one. A queued document therefore waits in the
database (`queued`, no `heartbeat_at`) until fewer than KNOWLEDGE_TENANT_CONCURRENCY of its tenant's documents
are with the workers (`documents_dispatch`); each ingestion that ends hands its place to the tenant's next
document. Another tenant's upload waits behind at most that many of this tenant's documents.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, F, Window
from django.db.models.functions import RowNumber
from django.utils import timezone
from django_tenants.utils import tenant_context

from files.services import file_delete, file_store
from files.storage import files_storage
from knowledge.models import IN_PROGRESS, Checkpoint, Chunk, Document, DocumentStatus, KnowledgeBase
from knowledge.progress import document_progress_publish
from knowledge.search import search_backend
from nexent_site.errors import ApplicationError


def _title_from(name: str) -> str:
    stem = name.rsplit("/", 1)[-1]
    return (stem.rsplit(".", 1)[0] if "." in stem else stem)[:300] or stem[:300]


@transaction.atomic
def document_upload(
    *, knowledge_base: KnowledgeBase, upload: Any, user: Any = None, title: str = "", dispatch: bool = True
) -> Document:
    """Store the upload (refused with a clear ApplicationError when empty, too large, of a type not accepted
    or over quota: nothing is stored then) and queue its ingestion (`dispatch`: see `document_enqueue`)."""
    stored = file_store(upload=upload, owner=user)
    document = Document.objects.create(
        knowledge_base=knowledge_base,
        file=stored,
        title=(title or _title_from(stored.original_name))[:300],
        uploaded_by=user if getattr(user, "pk", None) else None,
    )
    document_enqueue(document=document, dispatch=dispatch)
    return document


def documents_upload(
    *, knowledge_base: KnowledgeBase, uploads: list[Any], user: Any = None, title: str = ""
) -> list[Document]:
    """Upload several files at once, all or nothing: when one is refused (its ApplicationError is raised),
    no document is created and no bytes are left in storage."""
    documents: list[Document] = []
    stored_keys: list[str] = []
    try:
        with transaction.atomic():
            for upload in uploads:
                document = document_upload(
                    knowledge_base=knowledge_base, upload=upload, user=user, title=title, dispatch=False
                )
                documents.append(document)
                stored_keys.append(document.file.storage_key)
            dispatch_on_commit()  # once for them all
    except BaseException:
        for key in stored_keys:
            files_storage().delete(key)
        raise
    return documents


def document_enqueue(*, document: Document, resume: bool = False, dispatch: bool = True) -> None:
    """Queue the document's ingestion. `resume` keeps the generation being built and its checkpoint (the
    watchdog's re-queue); otherwise a new generation is started while the live chunks stay searchable.
    `dispatch=False`: the caller, which queues several, calls `dispatch_on_commit()` once after them."""
    now = timezone.now()
    fields: dict[str, Any] = {
        "status": DocumentStatus.QUEUED,
        "error": "",
        "heartbeat_at": None,  # waiting for its tenant's turn (documents_dispatch)
        "updated_at": now,
        "attempts": F("attempts") + 1,
    }
    if not resume:
        Chunk.objects.filter(document_id=document.pk, live=False).delete()
        fields.update(
            progress=0,
            checkpoint=Checkpoint.NONE,
            building_generation=max(document.live_generation, document.building_generation) + 1,
        )
    Document.objects.filter(pk=document.pk).update(**fields)
    document.refresh_from_db()
    document_progress_publish(document)
    if dispatch:
        dispatch_on_commit()


def dispatch_on_commit() -> None:
    """`documents_dispatch` for the current tenant once the current transaction commits (at once without one)."""
    tenant = connection.tenant
    transaction.on_commit(lambda: documents_dispatch(tenant=tenant))


def documents_dispatch(*, tenant: Any = None) -> list[int]:
    """Hand the tenant's waiting documents (the current tenant's, or `tenant`'s) to the workers, oldest first,
    while fewer than KNOWLEDGE_TENANT_CONCURRENCY of its documents are with them, and fewer than its embedding
    provider's `max_concurrency` of those embedded by the same provider. Returns the ids handed over.

    The provider's cap keeps a document from taking a worker thread only to wait there for the provider's slot
    (knowledge.services.embedding): with a one-at-a-time provider, four documents in flight held four background
    threads and embedded one batch at a time, while other tenants' documents waited for a thread.

    Called when a document is queued, when an ingestion ends, and by the watchdog. One dispatcher at a time per
    tenant (a transaction-level advisory lock), so two never hand out the same free place."""
    if tenant is not None and tenant.schema_name != connection.schema_name:
        with tenant_context(tenant):
            return documents_dispatch()
    from knowledge.tasks import document_ingest_task

    provider = "knowledge_base__embedding_provider"
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"ingest-dispatch:{connection.schema_name}"])
        with_workers = dict(
            Document.objects.filter(status__in=IN_PROGRESS, heartbeat_at__isnull=False)
            .values_list(provider)
            .annotate(count=Count("pk"))
            .order_by()
        )
        free = settings.KNOWLEDGE_TENANT_CONCURRENCY - sum(with_workers.values())
        if free <= 0:
            return []
        # the oldest `free` waiting documents of each provider, in the order they were queued
        waiting = (
            Document.objects.filter(status=DocumentStatus.QUEUED, heartbeat_at__isnull=True)
            .annotate(
                turn=Window(RowNumber(), partition_by=[F(provider)], order_by=[F("updated_at").asc(), F("pk").asc()])
            )
            .filter(turn__lte=free)
            .order_by("updated_at", "pk")
            .values_list("pk", provider, f"{provider}__max_concurrency")
        )
        ids = []
        for pk, provider_id, limit in waiting:
            if len(ids) == free:
                break
            if with_workers.get(provider_id, 0) < limit:
                ids.append(pk)
                with_workers[provider_id] = with_workers.get(provider_id, 0) + 1
        if ids:
            # the watchdog counts from here: a document whose task is lost is queued again once it is stale
            Document.objects.filter(pk__in=ids).update(heartbeat_at=timezone.now())
            transaction.on_commit(lambda: [document_ingest_task.delay(pk) for pk in ids])
    return ids


def document_retry(*, document: Document) -> None:
    if document.status not in (DocumentStatus.FAILED, DocumentStatus.CANCELLED):
        raise ApplicationError(
            f"“{document}” is {document.get_status_display().lower()}; only failed or cancelled "
            "documents can be retried.",
            code="not_retryable",
        )
    document_enqueue(document=document)


def document_reindex(*, document: Document) -> None:
    """Rebuild the document's chunks; its current chunks stay searchable until the new ones are ready."""
    if document.in_progress:
        raise ApplicationError(f"“{document}” is already being ingested.", code="in_progress")
    document_enqueue(document=document)


@transaction.atomic
def document_cancel(*, document: Document) -> None:
    """Stop an ingestion. A first ingestion ends cancelled; a reindex goes back to the chunks it had."""
    locked = Document.objects.select_for_update().get(pk=document.pk)
    if locked.status not in IN_PROGRESS:
        raise ApplicationError(f"“{document}” is not being ingested.", code="not_in_progress")
    status = DocumentStatus.READY if locked.live_generation else DocumentStatus.CANCELLED
    Document.objects.filter(pk=document.pk).update(
        status=status,
        progress=100 if status == DocumentStatus.READY else locked.progress,
        error="" if status == DocumentStatus.READY else "Cancelled.",
        checkpoint=Checkpoint.NONE,
        updated_at=timezone.now(),
    )
    # A queued task will find nothing to do; a running one sees the change between batches and drops its
    # generation itself (deleting it here too is harmless: the worker's next write to it is refused).
    Chunk.objects.filter(document_id=document.pk, live=False).delete()
    document.refresh_from_db()
    document_progress_publish(document)


@transaction.atomic
def document_delete(*, document: Document) -> None:
    """Remove the document, its chunks from the index and its file from storage."""
    kb = document.knowledge_base
    stored = document.file
    document_id = document.pk
    document.delete()
    if not stored.documents.exists():
        file_delete(stored_file=stored)
    transaction.on_commit(lambda: search_backend().document_prune(kb, document_id, keep_generation=None))
