"""REST API shapes of knowledge bases, documents and search. Input serializers are strict: an unknown field
is refused by name."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from agents.models import ModelProvider
from api.serializers import StrictModelSerializer, StrictSerializer
from knowledge.models import Document, KnowledgeBase, SearchMode
from knowledge.services.search import MAX_QUERY_CHARS

SETTINGS_FIELDS = [
    "name",
    "description",
    "embedding_provider",
    "chunk_strategy",
    "chunk_size",
    "chunk_overlap",
    "search_mode",
    "top_k",
    "fusion",
    "keyword_weight",
    "score_threshold",
]
MAX_FILES_PER_UPLOAD = 20


class DocumentCountsSerializer(serializers.Serializer):
    total = serializers.IntegerField(source="document_total")
    ready = serializers.IntegerField(source="document_ready")
    in_progress = serializers.IntegerField(source="document_in_progress")
    failed = serializers.IntegerField(source="document_failed")
    cancelled = serializers.IntegerField(source="document_cancelled")


class KnowledgeBaseSerializer(serializers.ModelSerializer):
    embedding_provider_name = serializers.CharField(source="embedding_provider.name", read_only=True)
    created_by = serializers.EmailField(source="created_by.email", read_only=True, allow_null=True)
    documents = DocumentCountsSerializer(source="*", read_only=True, help_text="Its documents, by state")

    class Meta:
        model = KnowledgeBase
        fields = [
            "id",
            "slug",
            *SETTINGS_FIELDS[:3],
            "embedding_provider_name",
            "embedding_dimension",
            *SETTINGS_FIELDS[3:],
            "documents",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class _EmbeddingProviderField(serializers.PrimaryKeyRelatedField):
    default_error_messages = {"does_not_exist": "There is no embedding provider {pk_value}."}

    def get_queryset(self) -> Any:
        return ModelProvider.objects.filter(kind="embedding")


class KnowledgeBaseCreateSerializer(StrictModelSerializer):
    embedding_provider = _EmbeddingProviderField(help_text="The id of an embedding model provider (fixed dimension)")

    class Meta:
        model = KnowledgeBase
        fields = ["slug", *SETTINGS_FIELDS]


class KnowledgeBaseUpdateSerializer(StrictModelSerializer):
    slug = serializers.SlugField(
        required=False, help_text="Fixed at creation: only the current value is accepted (agents refer to it)"
    )
    embedding_provider = _EmbeddingProviderField(
        required=False, help_text="Another embedding provider re-embeds every document"
    )

    class Meta:
        model = KnowledgeBase
        fields = ["slug", *SETTINGS_FIELDS]

    def validate_slug(self, value: str) -> str:
        if self.instance is not None and value != self.instance.slug:
            raise serializers.ValidationError(
                "The slug cannot be changed: agents refer to the knowledge base by it. Create another one instead."
            )
        return value


class FileSummarySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField(source="original_name")
    size = serializers.IntegerField(help_text="Bytes")
    content_type = serializers.CharField()


class DocumentSerializer(serializers.ModelSerializer):
    file = FileSummarySerializer(read_only=True)
    uploaded_by = serializers.EmailField(source="uploaded_by.email", read_only=True, allow_null=True)

    class Meta:
        model = Document
        fields = [
            "id",
            "knowledge_base",
            "title",
            "status",
            "progress",
            "error",
            "pages",
            "chunk_count",
            "language",
            "file",
            "uploaded_by",
            "created_at",
            "updated_at",
            "ingested_at",
        ]
        read_only_fields = fields


class DocumentUploadSerializer(StrictSerializer):
    file = serializers.ListField(
        child=serializers.FileField(allow_empty_file=True),
        min_length=1,
        max_length=MAX_FILES_PER_UPLOAD,
        help_text=f"One or more files (up to {MAX_FILES_PER_UPLOAD}), each in a `file` part",
    )
    title = serializers.CharField(
        max_length=300, required=False, help_text="Only with a single file (default: the file name without extension)"
    )

    def validate(self, attrs: dict) -> dict:
        if attrs.get("title") and len(attrs["file"]) > 1:
            raise serializers.ValidationError({"title": ["A title can only be given when uploading one file."]})
        return attrs


class DocumentListSerializer(serializers.Serializer):
    documents = DocumentSerializer(many=True)


class SearchSerializer(StrictSerializer):
    query = serializers.CharField(max_length=MAX_QUERY_CHARS)
    top_k = serializers.IntegerField(
        min_value=1, max_value=50, required=False, help_text="Default: the knowledge base's setting"
    )
    mode = serializers.ChoiceField(
        choices=SearchMode.choices, required=False, help_text="Default: the knowledge base's setting"
    )
    score_threshold = serializers.FloatField(
        min_value=0, max_value=1, required=False, help_text="Default: the knowledge base's setting"
    )


class MultiSearchSerializer(SearchSerializer):
    knowledge_bases = serializers.ListField(
        child=serializers.SlugField(max_length=60),
        max_length=20,
        required=False,
        help_text="Slugs of the knowledge bases to search (default: all of them)",
    )


class HitSerializer(serializers.Serializer):
    chunk_id = serializers.IntegerField()
    document_id = serializers.IntegerField()
    document_title = serializers.CharField()
    knowledge_base = serializers.SlugField(help_text="The knowledge base's slug")
    page = serializers.IntegerField(allow_null=True)
    heading_path = serializers.CharField()
    text = serializers.CharField()
    score = serializers.FloatField()
    keyword_score = serializers.FloatField(allow_null=True)
    vector_score = serializers.FloatField(allow_null=True)


class SearchResultSerializer(serializers.Serializer):
    mode = serializers.CharField(help_text="The mode used: hybrid, keyword, semantic, or mixed across bases")
    warnings = serializers.ListField(child=serializers.CharField())
    hits = HitSerializer(many=True)


class ReindexResultSerializer(serializers.Serializer):
    queued = serializers.IntegerField(help_text="How many documents were queued for reindexing")
