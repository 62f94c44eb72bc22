"""Knowledge bases, their documents and the documents' chunks, in the tenant's schema.

A document's chunks are written per *generation*: ingestion builds generation N+1 beside the live one and
swaps them in one transaction at the end, so searches never see a half-built document, a reindex never
takes a knowledge base offline, and a retried ingestion rebuilds only its own generation.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.contrib.postgres.search import SearchVectorField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from knowledge.fields import EmbeddingField


class SearchMode(models.TextChoices):
    HYBRID = "hybrid", _("Hybrid (keyword + semantic)")
    KEYWORD = "keyword", _("Keyword")
    SEMANTIC = "semantic", _("Semantic")


class Fusion(models.TextChoices):
    RRF = "rrf", _("Reciprocal rank fusion")
    WEIGHTED = "weighted", _("Weighted scores")


class ChunkStrategy(models.TextChoices):
    STRUCTURE = "structure", _("By structure (headings, paragraphs, tables)")
    FIXED = "fixed", _("Fixed size")


class KnowledgeBase(models.Model):
    name = models.CharField(max_length=120)
    slug = models.SlugField(max_length=60, unique=True, help_text=_("How agents refer to this knowledge base"))
    description = models.TextField(blank=True)
    embedding_provider = models.ForeignKey(
        "agents.ModelProvider",
        on_delete=models.PROTECT,
        related_name="knowledge_bases",
        limit_choices_to={"kind": "embedding"},
        help_text=_("Fixed at creation; changing it reindexes every document"),
    )
    embedding_dimension = models.PositiveIntegerField(editable=False)
    chunk_strategy = models.CharField(max_length=16, choices=ChunkStrategy.choices, default=ChunkStrategy.STRUCTURE)
    chunk_size = models.PositiveIntegerField(
        default=350, validators=[MinValueValidator(50), MaxValueValidator(4000)], help_text=_("In tokens")
    )
    chunk_overlap = models.PositiveIntegerField(
        default=40, validators=[MaxValueValidator(1000)], help_text=_("Tokens repeated between chunks")
    )
    search_mode = models.CharField(max_length=16, choices=SearchMode.choices, default=SearchMode.HYBRID)
    top_k = models.PositiveIntegerField(default=5, validators=[MinValueValidator(1), MaxValueValidator(50)])
    fusion = models.CharField(max_length=16, choices=Fusion.choices, default=Fusion.RRF)
    keyword_weight = models.FloatField(
        default=0.4,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text=_("Weighted fusion: share of the keyword score (the rest is semantic)"),
    )
    score_threshold = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0), MaxValueValidator(1)],
        help_text=_("Hide results whose relevance (0 to 1) is below this"),
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        if self.chunk_overlap >= self.chunk_size:
            raise ValidationError({"chunk_overlap": _("The overlap must be smaller than the chunk size.")})


class DocumentStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    EXTRACTING = "extracting", _("Extracting")
    CHUNKING = "chunking", _("Chunking")
    EMBEDDING = "embedding", _("Embedding")
    INDEXING = "indexing", _("Indexing")
    READY = "ready", _("Ready")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


IN_PROGRESS = (
    DocumentStatus.QUEUED,
    DocumentStatus.EXTRACTING,
    DocumentStatus.CHUNKING,
    DocumentStatus.EMBEDDING,
    DocumentStatus.INDEXING,
)


class Checkpoint(models.TextChoices):
    """The last stage finished for the generation being built; a retried ingestion resumes after it."""

    NONE = "", _("Nothing yet")
    CHUNKED = "chunked", _("Chunked")
    EMBEDDED = "embedded", _("Embedded")


class Document(models.Model):
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="documents")
    file = models.ForeignKey("files.StoredFile", on_delete=models.PROTECT, related_name="documents")
    title = models.CharField(max_length=300)
    status = models.CharField(max_length=16, choices=DocumentStatus.choices, default=DocumentStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0, help_text=_("Percent"))
    error = models.TextField(blank=True)
    pages = models.PositiveIntegerField(null=True, blank=True)
    chunk_count = models.PositiveIntegerField(default=0)
    language = models.CharField(max_length=16, blank=True)
    live_generation = models.PositiveIntegerField(default=0, editable=False)
    building_generation = models.PositiveIntegerField(default=0, editable=False)
    checkpoint = models.CharField(max_length=16, choices=Checkpoint.choices, blank=True, editable=False)
    attempts = models.PositiveIntegerField(default=0, editable=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True, editable=False)
    uploaded_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    ingested_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "heartbeat_at"])]

    def __str__(self) -> str:
        return self.title

    @property
    def in_progress(self) -> bool:
        return self.status in IN_PROGRESS


class Chunk(models.Model):
    id = models.BigAutoField(primary_key=True)
    knowledge_base = models.ForeignKey(KnowledgeBase, on_delete=models.CASCADE, related_name="chunks")
    document = models.ForeignKey(Document, on_delete=models.CASCADE, related_name="chunks")
    generation = models.PositiveIntegerField()
    live = models.BooleanField(default=False)
    position = models.PositiveIntegerField()
    page = models.PositiveIntegerField(null=True, blank=True)
    heading_path = models.CharField(max_length=500, blank=True)
    text = models.TextField()
    token_count = models.PositiveIntegerField()
    search_vector = SearchVectorField(null=True, editable=False)
    embedding = EmbeddingField(null=True, editable=False)

    class Meta:
        ordering = ["document", "position"]
        indexes = [
            GinIndex(fields=["search_vector"], name="knowledge_chunk_fts"),
            models.Index(fields=["document", "generation"], name="knowledge_chunk_doc_gen"),
            models.Index(fields=["knowledge_base", "live"], name="knowledge_chunk_kb_live"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["document", "generation", "position"], name="one_chunk_per_position")
        ]

    def __str__(self) -> str:
        return f"{self.document_id}#{self.position}"
