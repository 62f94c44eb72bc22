"""The ingestion pipeline: extract → chunk → embed → index, run by a Celery worker, resumable.

What callers may rely on:
- A document's chunks are built as a new generation beside the live one and swapped in by one transaction
  at the end: searches see the old chunks or the new ones, never a mix or a half-built set.
- Each stage is idempotent and checkpointed. Chunking replaces the generation's chunks in one transaction;
  embedding fills only chunks that have none yet; indexing is keyed by chunk id. A task that is killed and
  run again (acks-late redelivery, the watchdog, the retry action) resumes and ends with exactly one set.
- One ingestion of a document at a time: a Redis lock, extended while working, expires if the worker dies.
- Cancelling is seen between batches: the worker drops the generation it was building and stops.
- Failures a user can fix (empty, corrupt, encrypted, unsupported, a bad provider key) mark the document
  failed with the reason at once; an overloaded or unreachable embedding provider is retried with
  backoff first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from redis.exceptions import LockError

from agents.runtime.streams import redis_client
from files.services import file_open
from knowledge.chunking import chunk_blocks, search_text
from knowledge.extraction import ExtractionError, extract
from knowledge.models import IN_PROGRESS, Checkpoint, Chunk, Document, DocumentStatus
from knowledge.progress import Throttle, document_progress_publish
from knowledge.search import search_backend
from knowledge.services.embedding import embed_passages
from nexent_site.integrations.openai_compat import ProviderError

logger = logging.getLogger(__name__)

# Progress bands per stage, in percent of the whole document.
EXTRACTED_AT, CHUNKED_AT, EMBEDDED_AT = 10, 20, 95


class IngestionStopped(Exception):
    """The document was cancelled (or deleted) while it was being ingested."""


def document_lock_key(schema_name: str, document_id: int) -> str:
    return f"nexent:{schema_name}:document:{int(document_id)}:ingesting"


@contextmanager
def _document_lock(document_id: int) -> Iterator[object | None]:
    lock = redis_client().lock(
        document_lock_key(connection.schema_name, document_id), timeout=settings.KNOWLEDGE_LOCK_TTL_S, blocking=False
    )
    acquired = lock.acquire()
    try:
        yield lock if acquired else None
    finally:
        if acquired:
            with suppress(LockError):  # expired meanwhile: nothing to release
                lock.release()


def _set_state(document: Document, **fields: object) -> None:
    """Write the worker's progress, unless the document was cancelled or deleted meanwhile: a worker never
    overwrites a user's cancel."""
    now = timezone.now()
    updated = Document.objects.filter(pk=document.pk, status__in=IN_PROGRESS).update(
        **fields, heartbeat_at=now, updated_at=now
    )
    if not updated:
        raise IngestionStopped
    for name, value in fields.items():
        setattr(document, name, value)
    document.heartbeat_at = now
    document_progress_publish(document)


def _check_still_wanted(document: Document, lock: object) -> None:
    status = Document.objects.filter(pk=document.pk).values_list("status", flat=True).first()
    if status not in IN_PROGRESS:
        raise IngestionStopped
    lock.extend(settings.KNOWLEDGE_LOCK_TTL_S, replace_ttl=True)


def document_ingest(*, document_id: int) -> str:
    """Ingest (or resume ingesting) a document. Returns what happened: ready, failed, cancelled, busy, skipped."""
    with _document_lock(document_id) as lock:
        if lock is None:
            return "busy"  # another worker is on it; its lock expires if it died
        document = (
            Document.objects.select_related("knowledge_base__embedding_provider", "file").filter(pk=document_id).first()
        )
        if document is None or document.status not in IN_PROGRESS:
            return "skipped"
        try:
            _run_stages(document, lock)
        except IngestionStopped:
            _discard_building(document)
            return "cancelled"
        except ExtractionError as exc:
            _fail(document, exc.message if hasattr(exc, "message") else str(exc))
            return "failed"
        except ProviderError as exc:
            _fail(document, f"Embedding failed: {exc.message}")
            return "failed"
        except Exception as exc:
            logger.exception("ingestion of document %s failed", document_id)
            _fail(document, f"Unexpected error while ingesting: {type(exc).__name__}: {str(exc)[:300]}")
            return "failed"
        return "ready"


def _fail(document: Document, reason: str) -> None:
    _discard_building(document)
    with suppress(IngestionStopped):  # cancelled or deleted meanwhile: that outcome stands
        _set_state(document, status=DocumentStatus.FAILED, error=reason[:2000], checkpoint=Checkpoint.NONE)


def _discard_building(document: Document) -> None:
    Chunk.objects.filter(document_id=document.pk, generation=document.building_generation, live=False).delete()


def _run_stages(document: Document, lock: object) -> None:
    kb = document.knowledge_base
    generation = document.building_generation
    if document.checkpoint == Checkpoint.NONE:
        _set_state(document, status=DocumentStatus.EXTRACTING, progress=2, error="")
        with file_open(document.file) as handle:
            data = handle.read()
        extracted = extract(data, content_type=document.file.content_type, name=document.file.original_name)
        _check_still_wanted(document, lock)
        _set_state(document, status=DocumentStatus.CHUNKING, progress=EXTRACTED_AT)
        drafts = chunk_blocks(
            extracted.blocks, size=kb.chunk_size, overlap=kb.chunk_overlap, strategy=kb.chunk_strategy
        )
        if not drafts:
            raise ExtractionError("The document contains no text to index.", code="no_text")
        with transaction.atomic():
            Chunk.objects.filter(document_id=document.pk, generation=generation).delete()
            Chunk.objects.bulk_create(
                [
                    Chunk(
                        knowledge_base_id=kb.pk,
                        document_id=document.pk,
                        generation=generation,
                        position=draft.position,
                        page=draft.page,
                        heading_path=draft.heading_path,
                        text=draft.text,
                        token_count=draft.token_count,
                    )
                    for draft in drafts
                ],
                batch_size=500,
            )
            _fill_search_vectors(document.pk, generation, extracted.language)
            _set_state(
                document,
                checkpoint=Checkpoint.CHUNKED,
                pages=extracted.pages,
                language=extracted.language,
                chunk_count=len(drafts),
                progress=CHUNKED_AT,
            )
    if document.checkpoint == Checkpoint.CHUNKED:
        _embed_chunks(document, lock)
        _set_state(document, checkpoint=Checkpoint.EMBEDDED, progress=EMBEDDED_AT)
    _check_still_wanted(document, lock)
    _set_state(document, status=DocumentStatus.INDEXING)
    backend = search_backend()
    chunks = list(Chunk.objects.filter(document_id=document.pk, generation=generation).order_by("position"))
    backend.chunks_index(kb, chunks)
    with transaction.atomic():
        # The swap: from here on searches see the new generation only.
        Document.objects.select_for_update().filter(pk=document.pk).first()
        _check_still_wanted(document, lock)
        Chunk.objects.filter(document_id=document.pk).exclude(generation=generation).delete()
        Chunk.objects.filter(document_id=document.pk, generation=generation).update(live=True)
        _set_state(
            document,
            status=DocumentStatus.READY,
            progress=100,
            live_generation=generation,
            checkpoint=Checkpoint.NONE,
            chunk_count=len(chunks),
            ingested_at=timezone.now(),
            error="",
        )
    backend.document_prune(kb, document.pk, keep_generation=generation)


def _fill_search_vectors(document_id: int, generation: int, language: str) -> None:
    """English text gets PostgreSQL's English stemming; other text (Chinese above all, segmented into words
    by jieba first) the `simple` configuration. The heading path is searchable too."""
    with connection.cursor() as cursor:
        if language == "en":
            cursor.execute(
                "UPDATE knowledge_chunk SET search_vector = to_tsvector('english', heading_path || ' ' || text) "
                "WHERE document_id = %s AND generation = %s",
                [document_id, generation],
            )
            return
        rows = Chunk.objects.filter(document_id=document_id, generation=generation).values_list(
            "id", "heading_path", "text"
        )
        cursor.executemany(
            "UPDATE knowledge_chunk SET search_vector = to_tsvector('simple', %s) WHERE id = %s",
            [(search_text(f"{heading} {text}", language or "zh"), pk) for pk, heading, text in rows],
        )


def _embed_chunks(document: Document, lock: object) -> None:
    kb = document.knowledge_base
    _set_state(document, status=DocumentStatus.EMBEDDING)
    pending = Chunk.objects.filter(document_id=document.pk, generation=document.building_generation)
    total = max(1, document.chunk_count)
    batch_size = settings.KNOWLEDGE_EMBED_BATCH
    show = Throttle(0.5)
    while True:
        batch = list(pending.filter(embedding__isnull=True).order_by("position")[:batch_size])
        if not batch:
            return
        vectors = embed_passages(kb, [_embedding_input(chunk) for chunk in batch])
        for chunk, vector in zip(batch, vectors, strict=True):
            chunk.embedding = vector
        Chunk.objects.bulk_update(batch, ["embedding"])
        _check_still_wanted(document, lock)
        done = total - pending.filter(embedding__isnull=True).count()
        progress = CHUNKED_AT + (EMBEDDED_AT - CHUNKED_AT) * done // total
        if show():
            _set_state(document, progress=progress)
        else:
            document.progress = progress


def _embedding_input(chunk: Chunk) -> str:
    # The section's headings give a passage the context a reader would have.
    return f"{chunk.heading_path}\n{chunk.text}" if chunk.heading_path else chunk.text


def documents_watchdog() -> dict[str, int]:
    """Documents whose worker stopped reporting (killed, lost) are queued again, up to
    KNOWLEDGE_MAX_ATTEMPTS attempts, then marked failed with the reason; documents waiting for their tenant's
    turn are handed to the workers if places are free (should an ingestion's end not have done it). Documents
    still waiting are not stale: they have no heartbeat yet. Returns counts."""
    from knowledge.services.documents import document_enqueue, documents_dispatch

    cutoff = timezone.now() - timezone.timedelta(seconds=settings.KNOWLEDGE_STALE_AFTER_S)
    stale = Document.objects.filter(status__in=IN_PROGRESS, heartbeat_at__lt=cutoff)
    requeued = failed = 0
    for document in stale:
        if redis_client().exists(document_lock_key(connection.schema_name, document.pk)):
            continue  # a worker still holds it
        if document.attempts >= settings.KNOWLEDGE_MAX_ATTEMPTS:
            _fail(document, f"The ingestion stopped responding {document.attempts} times; use Retry to try again.")
            failed += 1
        else:
            document_enqueue(document=document, resume=True)
            requeued += 1
    dispatched = len(documents_dispatch())
    return {"requeued": requeued, "failed": failed, "dispatched": dispatched}
