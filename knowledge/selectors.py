"""Reads of knowledge bases and documents, scoped to the current tenant (the connection's schema) and to
what the user may see: staff see every knowledge base of their organisation."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q, QuerySet

from knowledge.models import IN_PROGRESS, Document, DocumentStatus, KnowledgeBase


def knowledge_base_get_for_staff(*, kb_id: Any, user: Any) -> KnowledgeBase | None:
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return None
    try:
        return KnowledgeBase.objects.filter(pk=int(kb_id)).first()
    except (TypeError, ValueError):
        return None


def knowledge_base_documents_state(*, knowledge_base: KnowledgeBase) -> list[dict]:
    from knowledge.progress import document_state

    return [document_state(d) for d in knowledge_base.documents.order_by("-created_at")[:500]]


def knowledge_bases_with_counts() -> QuerySet[KnowledgeBase]:
    return KnowledgeBase.objects.select_related("embedding_provider").annotate(
        document_total=Count("documents", distinct=True),
        document_ready=Count("documents", filter=Q(documents__status="ready"), distinct=True),
    )


def documents_for(*, knowledge_base: KnowledgeBase) -> QuerySet[Document]:
    return knowledge_base.documents.select_related("file", "uploaded_by")


def document_get_for_reader(*, document_id: Any, user: Any) -> Document | None:
    """A document the user may read: staff read any; others only documents cited in answers to their own
    conversations (what the agent showed them)."""
    from conversations.models import Citation

    if not (user.is_authenticated and user.is_active):
        return None
    try:
        document = Document.objects.select_related("file", "knowledge_base").filter(pk=int(document_id)).first()
    except (TypeError, ValueError):
        return None
    if document is None:
        return None
    if user.is_staff or Citation.objects.filter(document_id=document.pk, message__conversation__user=user).exists():
        return document
    return None


def documents_being_indexed(*, knowledge_base_slugs: list[str]) -> dict[str, int]:
    """Per knowledge base (of these slugs, those that have any), how many documents are still on their way to
    being searchable (queued to indexed): answers cannot find them yet. One query."""
    if not knowledge_base_slugs:
        return {}
    rows = (
        Document.objects.filter(knowledge_base__slug__in=knowledge_base_slugs, status__in=IN_PROGRESS)
        .values("knowledge_base__slug")
        .annotate(count=Count("id"))
        .order_by()
    )
    return {row["knowledge_base__slug"]: row["count"] for row in rows}


def knowledge_bases_with_document_states() -> QuerySet[KnowledgeBase]:
    """Knowledge bases with their documents counted by state, in the same query (no query per row)."""
    return KnowledgeBase.objects.select_related("embedding_provider", "created_by").annotate(
        document_total=Count("documents"),
        document_ready=Count("documents", filter=Q(documents__status=DocumentStatus.READY)),
        document_in_progress=Count("documents", filter=Q(documents__status__in=IN_PROGRESS)),
        document_failed=Count("documents", filter=Q(documents__status=DocumentStatus.FAILED)),
        document_cancelled=Count("documents", filter=Q(documents__status=DocumentStatus.CANCELLED)),
    )
