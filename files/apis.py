"""REST API of stored files (under /api/v1/files/), with the `files` scope: a user lists, reads and deletes
their own files; with the `admin` scope (the organisation's staff) every file of the organisation."""

from __future__ import annotations

from django.db.models import ProtectedError, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from api.idempotency import IDEMPOTENCY_KEY_PARAMETER as IDEMPOTENCY_KEY
from api.idempotency import idempotent
from api.permissions import request_scopes
from api.scopes import Scope
from files.models import StoredFile
from files.selectors import files_visible_to
from files.serializers import FileDetailSerializer, FileSerializer, FileUploadSerializer
from files.services import file_delete, file_store
from nexent_site.errors import ApplicationError

ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH)


@extend_schema(tags=["files"])
@extend_schema_view(
    list=extend_schema(summary="List files (yours; with the admin scope, the whole organisation's)"),
    retrieve=extend_schema(summary="A file's details and a short-lived download link", parameters=[ID]),
    destroy=extend_schema(
        summary="Delete a file (refused while a document or a chat message uses it)", parameters=[ID]
    ),
)
class FileViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    read_scope = Scope.FILES
    write_scope = Scope.FILES
    serializer_class = FileSerializer
    lookup_value_regex = r"[0-9a-fA-F-]{32,36}"
    filterset_fields = ["content_type"]
    search_fields = ["original_name"]
    ordering_fields = ["created_at", "size", "original_name"]
    ordering = ["-created_at"]

    def get_queryset(self) -> QuerySet[StoredFile]:
        if getattr(self, "swagger_fake_view", False):
            return StoredFile.objects.none()
        whole_tenant = Scope.ADMIN in request_scopes(self.request)
        return files_visible_to(user=self.request.user, whole_tenant=whole_tenant)

    def get_serializer_class(self) -> type[FileSerializer]:
        return FileSerializer if self.action == "list" else FileDetailSerializer

    def get_parsers(self) -> list:
        return [MultiPartParser()]

    @extend_schema(
        request={"multipart/form-data": FileUploadSerializer},
        responses={201: FileSerializer},
        parameters=[IDEMPOTENCY_KEY],
        summary="Upload a file",
        description="Refused with the reason when empty, too large, of a type not accepted or over the "
        "organisation's storage quota.",
    )
    @idempotent()
    def create(self, request: Request) -> Response:
        form = FileUploadSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        stored = file_store(upload=form.validated_data["file"], owner=request.user)
        # No download link here: a replayed answer would hand out an expired one. GET the file for a link.
        return Response(FileSerializer(stored).data, status=status.HTTP_201_CREATED)

    def perform_destroy(self, instance: StoredFile) -> None:
        try:
            file_delete(stored_file=instance)
        except ProtectedError:
            raise ApplicationError(
                f"“{instance}” is used by a knowledge base document or a chat message; delete that first.",
                code="file_in_use",
                status=409,
            ) from None
