"""The demo tenant's `handbook` knowledge base: the project's own README and docs."""

from __future__ import annotations

from django.conf import settings
from django.core.files.base import ContentFile

from agents.services.providers import provider_default
from knowledge.models import KnowledgeBase
from knowledge.services.bases import knowledge_base_create
from knowledge.services.documents import document_upload

HANDBOOK_SLUG = "handbook"


def handbook_sources() -> list:
    docs = sorted((settings.BASE_DIR / "docs").glob("*.md"))
    return [settings.BASE_DIR / "README.md", *docs]


def demo_handbook_ensure() -> KnowledgeBase | None:
    """Idempotent: the knowledge base, and each source file not yet in it, queued for ingestion (a worker
    ingests them once it runs). None when the tenant has no embedding provider."""
    kb = KnowledgeBase.objects.filter(slug=HANDBOOK_SLUG).first()
    if kb is None:
        provider = provider_default("embedding")
        if provider is None:
            return None
        kb = knowledge_base_create(
            name="Handbook",
            slug=HANDBOOK_SLUG,
            description="Nexent's own README and documentation.",
            embedding_provider=provider,
        )
    present = set(kb.documents.values_list("file__original_name", flat=True))
    for path in handbook_sources():
        if path.name in present or not path.exists():
            continue
        document_upload(knowledge_base=kb, upload=ContentFile(path.read_bytes(), name=path.name), title=path.stem)
    return kb
