"""Knowledge bases: create with a fixed embedding model (its dimension recorded), update, change the
embedding model (which reindexes), reindex, delete."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from agents.models import ModelProvider
from files.services import file_delete
from knowledge.models import IN_PROGRESS, Document, KnowledgeBase
from knowledge.search import search_backend
from nexent_site.integrations.openai_compat import ProviderConfig, ProviderError, embed

REINDEX_FIELDS = ("chunk_strategy", "chunk_size", "chunk_overlap")


def provider_dimension(provider: ModelProvider) -> int:
    """The provider's embedding size: recorded by its connection test, or asked now."""
    if provider.kind != "embedding":
        raise ValidationError({"embedding_provider": "Choose an embedding provider (this one is for chat)."})
    if provider.dimension:
        return provider.dimension
    try:
        vector = embed(ProviderConfig.from_provider(provider), ["dimension probe"])[0]
    except ProviderError as exc:
        raise ValidationError(
            {"embedding_provider": f"“{provider}” could not be reached to learn its embedding size: {exc.message}"}
        ) from None
    ModelProvider.objects.filter(pk=provider.pk).update(dimension=len(vector))
    provider.dimension = len(vector)
    return len(vector)


@transaction.atomic
def knowledge_base_create(*, name: str, slug: str, embedding_provider: ModelProvider, **options: Any) -> KnowledgeBase:
    """Validated (field errors as ValidationError); the provider's dimension is fixed for the knowledge base."""
    kb = KnowledgeBase(name=name, slug=slug, embedding_provider=embedding_provider, **options)
    kb.embedding_dimension = provider_dimension(embedding_provider)
    kb.full_clean()
    kb.save()
    transaction.on_commit(lambda: search_backend().knowledge_base_prepare(kb))
    return kb


@transaction.atomic
def knowledge_base_update(*, knowledge_base: KnowledgeBase, **fields: Any) -> KnowledgeBase:
    """Change settings (ValidationError with field names when invalid). Another embedding provider goes
    through knowledge_base_change_embedding; new chunking settings reindex every document."""
    if "embedding_provider" in fields and fields["embedding_provider"].pk != knowledge_base.embedding_provider_id:
        return knowledge_base_change_embedding(knowledge_base=knowledge_base, provider=fields.pop("embedding_provider"))
    before = {name: getattr(knowledge_base, name) for name in REINDEX_FIELDS}
    for name, value in fields.items():
        setattr(knowledge_base, name, value)
    knowledge_base.full_clean()
    knowledge_base.save()
    if any(getattr(knowledge_base, name) != value for name, value in before.items()):
        knowledge_base_reindex(knowledge_base=knowledge_base)
    return knowledge_base


@transaction.atomic
def knowledge_base_change_embedding(*, knowledge_base: KnowledgeBase, provider: ModelProvider) -> KnowledgeBase:
    """Switch to another embedding model: its dimension is recorded and every document is re-embedded.
    Keyword search keeps working meanwhile; semantic search covers the documents already rebuilt."""
    dimension = provider_dimension(provider)
    knowledge_base.embedding_provider = provider
    knowledge_base.embedding_dimension = dimension
    knowledge_base.full_clean()
    knowledge_base.save()
    transaction.on_commit(lambda: search_backend().knowledge_base_prepare(knowledge_base))
    knowledge_base_reindex(knowledge_base=knowledge_base)
    return knowledge_base


def knowledge_base_reindex(*, knowledge_base: KnowledgeBase) -> int:
    """Rebuild every document (not those being ingested or cancelled). Searches go on meanwhile: each
    document's chunks are swapped when its new ones are ready. Returns how many were queued."""
    from knowledge.services.documents import dispatch_on_commit, document_enqueue

    queued = 0
    for document in knowledge_base.documents.exclude(status__in=["cancelled", *IN_PROGRESS]):
        document_enqueue(document=document, dispatch=False)
        queued += 1
    if queued:
        dispatch_on_commit()
    return queued


@transaction.atomic
def knowledge_base_delete(*, knowledge_base: KnowledgeBase) -> None:
    """Delete the knowledge base, its documents and chunks, their files and its search index."""
    files = [
        document.file for document in Document.objects.filter(knowledge_base=knowledge_base).select_related("file")
    ]
    kb = KnowledgeBase(pk=knowledge_base.pk, embedding_dimension=knowledge_base.embedding_dimension)
    knowledge_base.delete()
    for stored in files:
        if not stored.documents.exists():
            file_delete(stored_file=stored)
    transaction.on_commit(lambda: search_backend().knowledge_base_drop(kb))
