"""REST API of knowledge bases, their documents and search (under /api/v1/). Reading and searching need the
`knowledge:read` scope, everything else `knowledge:write`. Views validate, call a service or selector and
serialize; the services raise the errors (ApplicationError, ValidationError) the API reports."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from api.idempotency import IDEMPOTENCY_KEY_PARAMETER as IDEMPOTENCY_KEY
from api.idempotency import idempotent
from api.scopes import Scope
from knowledge.models import Document, KnowledgeBase
from knowledge.selectors import documents_for, knowledge_bases_with_document_states
from knowledge.serializers import (
    DocumentListSerializer,
    DocumentSerializer,
    DocumentUploadSerializer,
    KnowledgeBaseCreateSerializer,
    KnowledgeBaseSerializer,
    KnowledgeBaseUpdateSerializer,
    MultiSearchSerializer,
    ReindexResultSerializer,
    SearchResultSerializer,
    SearchSerializer,
)
from knowledge.services.bases import (
    knowledge_base_create,
    knowledge_base_delete,
    knowledge_base_reindex,
    knowledge_base_update,
)
from knowledge.services.documents import (
    document_cancel,
    document_delete,
    document_reindex,
    document_retry,
    documents_upload,
)
from knowledge.services.search import SearchResult, knowledge_search

KB_ID = OpenApiParameter("kb_id", int, OpenApiParameter.PATH, description="The knowledge base's id")
ID = OpenApiParameter("id", int, OpenApiParameter.PATH)


def _search_response(result: SearchResult) -> Response:
    data = {"mode": result.mode, "warnings": result.warnings, "hits": [hit.as_dict() for hit in result.hits]}
    return Response(SearchResultSerializer(data).data)


@extend_schema(tags=["knowledge"])
@extend_schema_view(
    list=extend_schema(summary="List knowledge bases"),
    retrieve=extend_schema(summary="A knowledge base, with its documents counted by state", parameters=[ID]),
    partial_update=extend_schema(parameters=[ID]),
    destroy=extend_schema(summary="Delete a knowledge base with its documents and their files", parameters=[ID]),
    search=extend_schema(parameters=[ID], operation_id="knowledge_bases_search"),
    reindex=extend_schema(parameters=[ID], operation_id="knowledge_bases_reindex"),
)
class KnowledgeBaseViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    read_scope = Scope.KNOWLEDGE_READ
    write_scope = Scope.KNOWLEDGE_WRITE
    action_scopes = {"search": Scope.KNOWLEDGE_READ}
    serializer_class = KnowledgeBaseSerializer
    lookup_value_regex = r"\d+"
    filterset_fields = ["search_mode", "embedding_provider"]
    search_fields = ["name", "slug", "description"]
    ordering_fields = ["name", "slug", "created_at", "updated_at"]
    ordering = ["name"]

    def get_queryset(self) -> QuerySet[KnowledgeBase]:
        if self.action in ("search", "reindex"):
            return KnowledgeBase.objects.select_related("embedding_provider")
        return knowledge_bases_with_document_states()

    def _answer(self, kb: KnowledgeBase, status_code: int = status.HTTP_200_OK) -> Response:
        fresh = knowledge_bases_with_document_states().get(pk=kb.pk)
        return Response(KnowledgeBaseSerializer(fresh).data, status=status_code)

    @extend_schema(
        request=KnowledgeBaseCreateSerializer,
        responses={201: KnowledgeBaseSerializer},
        summary="Create a knowledge base (its embedding provider's dimension is fixed for it)",
    )
    def create(self, request: Request) -> Response:
        form = KnowledgeBaseCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        kb = knowledge_base_create(created_by=request.user, **form.validated_data)
        return self._answer(kb, status.HTTP_201_CREATED)

    @extend_schema(
        request=KnowledgeBaseUpdateSerializer,
        responses=KnowledgeBaseSerializer,
        summary="Change a knowledge base's settings (new chunking settings or embedding provider reindex it)",
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        kb = self.get_object()
        form = KnowledgeBaseUpdateSerializer(kb, data=request.data, partial=True)
        form.is_valid(raise_exception=True)
        fields = {name: value for name, value in form.validated_data.items() if name != "slug"}
        knowledge_base_update(knowledge_base=kb, **fields)
        return self._answer(kb)

    def destroy(self, request: Request, pk: str) -> Response:
        knowledge_base_delete(knowledge_base=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        request=SearchSerializer,
        responses=SearchResultSerializer,
        summary="Search a knowledge base (live chunks only; keyword-only with a warning if embeddings are down)",
    )
    @action(detail=True, methods=["post"])
    def search(self, request: Request, pk: str) -> Response:
        kb = self.get_object()
        form = SearchSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        return _search_response(knowledge_search(knowledge_bases=[kb], **form.validated_data))

    @extend_schema(
        request=None,
        responses=ReindexResultSerializer,
        summary="Rebuild every document's chunks (searches keep working meanwhile)",
    )
    @action(detail=True, methods=["post"])
    def reindex(self, request: Request, pk: str) -> Response:
        queued = knowledge_base_reindex(knowledge_base=self.get_object())
        return Response(ReindexResultSerializer({"queued": queued}).data)


@extend_schema(tags=["knowledge"], parameters=[KB_ID])
@extend_schema_view(
    list=extend_schema(summary="List a knowledge base's documents with their ingestion state"),
    retrieve=extend_schema(summary="A document and its ingestion state", parameters=[ID]),
    destroy=extend_schema(summary="Delete a document, its chunks and its file", parameters=[ID]),
    retry=extend_schema(parameters=[ID], operation_id="knowledge_bases_documents_retry"),
    cancel=extend_schema(parameters=[ID], operation_id="knowledge_bases_documents_cancel"),
    reindex=extend_schema(parameters=[ID], operation_id="knowledge_bases_documents_reindex"),
)
class DocumentViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    read_scope = Scope.KNOWLEDGE_READ
    write_scope = Scope.KNOWLEDGE_WRITE
    serializer_class = DocumentSerializer
    lookup_value_regex = r"\d+"
    filterset_fields = ["status"]
    search_fields = ["title"]
    ordering_fields = ["created_at", "updated_at", "title", "status", "progress"]
    ordering = ["-created_at"]

    @cached_property
    def knowledge_base(self) -> KnowledgeBase:
        kb = KnowledgeBase.objects.filter(pk=int(self.kwargs["kb_id"])).first()
        if kb is None:
            raise Http404("No such knowledge base.")
        return kb

    def get_queryset(self) -> QuerySet[Document]:
        if getattr(self, "swagger_fake_view", False):
            return Document.objects.none()
        return documents_for(knowledge_base=self.knowledge_base)

    def get_parsers(self) -> list:
        # Uploads are multipart; the action endpoints take no body.
        return [MultiPartParser()]

    def _answer(self, document: Document) -> Response:
        return Response(DocumentSerializer(self.get_queryset().get(pk=document.pk)).data)

    @extend_schema(
        request={"multipart/form-data": DocumentUploadSerializer},
        responses={201: DocumentListSerializer},
        parameters=[IDEMPOTENCY_KEY],
        summary="Upload documents (all or nothing) and queue their ingestion",
        description="Each file is checked (empty, size, type sniffed from the bytes, storage quota); if one is "
        "refused, nothing is stored and the error names it.",
    )
    @idempotent()
    def create(self, request: Request, kb_id: str) -> Response:
        form = DocumentUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        documents = documents_upload(
            knowledge_base=self.knowledge_base,
            uploads=form.validated_data["file"],
            user=request.user,
            title=form.validated_data.get("title", ""),
        )
        fresh = self.get_queryset().filter(pk__in=[d.pk for d in documents]).order_by("pk")
        return Response(DocumentListSerializer({"documents": fresh}).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: Document) -> None:
        document_delete(document=instance)

    @extend_schema(
        request=None,
        responses=DocumentSerializer,
        summary="Retry a failed or cancelled document",
    )
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, kb_id: str, pk: str) -> Response:
        document = self.get_object()
        document_retry(document=document)
        return self._answer(document)

    @extend_schema(request=None, responses=DocumentSerializer, summary="Stop a document's ingestion")
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, kb_id: str, pk: str) -> Response:
        document = self.get_object()
        document_cancel(document=document)
        return self._answer(document)

    @extend_schema(
        request=None,
        responses=DocumentSerializer,
        summary="Rebuild a document's chunks (its current ones stay searchable until then)",
    )
    @action(detail=True, methods=["post"])
    def reindex(self, request: Request, kb_id: str, pk: str) -> Response:
        document = self.get_object()
        document_reindex(document=document)
        return self._answer(document)


class KnowledgeSearchView(APIView):
    """Search several knowledge bases at once, named by slug."""

    read_scope = Scope.KNOWLEDGE_READ

    @extend_schema(
        tags=["knowledge"],
        operation_id="knowledge_search",
        request=MultiSearchSerializer,
        responses=SearchResultSerializer,
        summary="Search several knowledge bases (by slug; default: all), hits merged by score",
    )
    def post(self, request: Request) -> Response:
        form = MultiSearchSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        options: dict[str, Any] = dict(form.validated_data)
        slugs = options.pop("knowledge_bases", None)
        bases = KnowledgeBase.objects.select_related("embedding_provider")
        if slugs is not None:
            bases = bases.filter(slug__in=slugs)
            missing = sorted(set(slugs) - {kb.slug for kb in bases})
            if missing:
                raise serializers.ValidationError(
                    {"knowledge_bases": [f"Unknown knowledge base(s): {', '.join(missing)}."]}
                )
        return _search_response(knowledge_search(knowledge_bases=list(bases), **options))
