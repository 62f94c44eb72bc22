from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils.html import format_html

from knowledge.forms import DocumentUploadForm, KnowledgeBaseForm, RetrievalTestForm
from knowledge.models import Chunk, Document, DocumentStatus, KnowledgeBase
from knowledge.selectors import knowledge_bases_with_counts
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
    document_upload,
)
from knowledge.services.search import knowledge_search
from nexent_site.admin_sites import admin_adopt, tenant_admin_site
from nexent_site.errors import ApplicationError

STATUS_COLOURS = {
    DocumentStatus.READY: "#2e7d32",
    DocumentStatus.FAILED: "#c62828",
    DocumentStatus.CANCELLED: "#b45309",
}


def progress_bar(document: Document) -> str:
    colour = STATUS_COLOURS.get(document.status, "#1d4ed8")
    return format_html(
        '<span class="kb-doc" data-document="{}" data-kb="{}">'
        '<progress max="100" value="{}" aria-label="{}"></progress> '
        '<strong class="kb-status" style="color:{}">{}</strong> <span class="kb-pct">{}%</span></span>',
        document.pk,
        document.knowledge_base_id,
        document.progress,
        document.get_status_display(),
        colour,
        document.get_status_display(),
        document.progress,
    )


def _apply_each(request: HttpRequest, items: Any, call: Any, done_message: str) -> list[str]:
    """Call `call(item)` for each item; report how many succeeded and each refusal's reason. Returns the
    refusals."""
    done, refused = 0, []
    for item in items:
        try:
            call(item)
            done += 1
        except ApplicationError as exc:
            refused.append(exc.message)
    if done:
        messages.success(request, done_message.format(count=done))
    for message in refused:
        messages.warning(request, message)
    return refused


def _apply(request: HttpRequest, queryset: QuerySet[Document], service: Any, verb: str) -> None:
    _apply_each(request, queryset, lambda document: service(document=document), f"{verb} {{count}} document(s).")


class DocumentInline(admin.TabularInline):
    model = Document
    fields = ["title", "status_progress", "pages", "chunk_count", "error", "created_at"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    show_change_link = True
    can_delete = False
    ordering = ["-created_at"]

    @admin.display(description="Status")
    def status_progress(self, obj: Document) -> str:
        return progress_bar(obj)


@admin.register(KnowledgeBase, site=tenant_admin_site)
class KnowledgeBaseAdmin(admin.ModelAdmin):
    form = KnowledgeBaseForm
    change_form_template = "admin/knowledge/knowledgebase/change_form.html"
    list_display = ["name", "slug", "embedding_provider", "embedding_dimension", "documents", "search_mode", "tools"]
    list_filter = ["search_mode", "embedding_provider"]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["embedding_dimension", "created_by", "created_at", "updated_at"]
    inlines = [DocumentInline]
    actions = ["reindex_selected"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "description"]}),
        ("Embeddings", {"fields": ["embedding_provider", "embedding_dimension"]}),
        ("Chunking", {"fields": ["chunk_strategy", "chunk_size", "chunk_overlap"]}),
        ("Search defaults", {"fields": ["search_mode", "top_k", "fusion", "keyword_weight", "score_threshold"]}),
        ("History", {"fields": ["created_by", "created_at", "updated_at"]}),
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[KnowledgeBase]:
        return knowledge_bases_with_counts()

    def get_readonly_fields(self, request: HttpRequest, obj: KnowledgeBase | None = None) -> list:
        # Agents name knowledge bases by slug: renaming one would silently detach it from them.
        return [*self.readonly_fields, "slug"] if obj else self.readonly_fields

    def get_prepopulated_fields(self, request: HttpRequest, obj: KnowledgeBase | None = None) -> dict:
        return {} if obj else self.prepopulated_fields

    @admin.display(description="Documents (ready / all)")
    def documents(self, obj: KnowledgeBase) -> str:
        return f"{getattr(obj, 'document_ready', 0)} / {getattr(obj, 'document_total', 0)}"

    @admin.display(description="")
    def tools(self, obj: KnowledgeBase) -> str:
        return format_html(
            '<a href="{}">Upload</a> · <a href="{}">Test retrieval</a>',
            reverse("admin:knowledge_knowledgebase_upload", args=[obj.pk]),
            reverse("admin:knowledge_knowledgebase_search", args=[obj.pk]),
        )

    def save_model(self, request: HttpRequest, obj: KnowledgeBase, form: Any, change: bool) -> None:
        fields = {name: form.cleaned_data[name] for name in form.Meta.fields if name in form.cleaned_data}
        if change:
            knowledge_base_update(knowledge_base=KnowledgeBase.objects.get(pk=obj.pk), **fields)
        else:
            admin_adopt(obj, knowledge_base_create(created_by=request.user, **fields))

    def delete_model(self, request: HttpRequest, obj: KnowledgeBase) -> None:
        knowledge_base_delete(knowledge_base=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[KnowledgeBase]) -> None:
        for kb in queryset:
            knowledge_base_delete(knowledge_base=kb)

    @admin.action(description="Reindex selected knowledge bases (searches keep working)")
    def reindex_selected(self, request: HttpRequest, queryset: QuerySet[KnowledgeBase]) -> None:
        queued = sum(knowledge_base_reindex(knowledge_base=kb) for kb in queryset)
        messages.success(request, f"Queued {queued} document(s) for reindexing.")

    def get_urls(self) -> list:
        view = self.admin_site.admin_view
        return [
            path("<int:kb_id>/upload/", view(self.upload_view), name="knowledge_knowledgebase_upload"),
            path("<int:kb_id>/search/", view(self.search_view), name="knowledge_knowledgebase_search"),
            path("<int:kb_id>/reindex/", view(self.reindex_view), name="knowledge_knowledgebase_reindex"),
            *super().get_urls(),
        ]

    def _kb_for(self, request: HttpRequest, kb_id: int, *, change: bool) -> KnowledgeBase:
        kb = get_object_or_404(KnowledgeBase, pk=kb_id)
        allowed = self.has_change_permission(request, kb) if change else self.has_view_permission(request, kb)
        if not allowed:
            raise PermissionDenied
        return kb

    def upload_view(self, request: HttpRequest, kb_id: int) -> HttpResponse:
        kb = self._kb_for(request, kb_id, change=True)
        form = DocumentUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            refused = _apply_each(
                request,
                form.cleaned_data["files"],
                lambda upload: document_upload(knowledge_base=kb, upload=upload, user=request.user),
                "Queued {count} document(s) for ingestion.",
            )
            if not refused:
                return HttpResponseRedirect(reverse("admin:knowledge_knowledgebase_change", args=[kb.pk]))
            form = DocumentUploadForm()
        context = {**self.admin_site.each_context(request), "kb": kb, "form": form, "opts": self.model._meta}
        context["title"] = f"Upload to {kb}"
        return render(request, "admin/knowledge/knowledgebase/upload.html", context)

    def search_view(self, request: HttpRequest, kb_id: int) -> HttpResponse:
        kb = self._kb_for(request, kb_id, change=False)
        form = RetrievalTestForm(request.GET or None)
        result = None
        if request.GET and form.is_valid():
            data = form.cleaned_data
            result = knowledge_search(
                knowledge_bases=[kb],
                query=data["query"],
                top_k=data.get("top_k"),
                mode=data.get("mode") or None,
                score_threshold=data.get("score_threshold"),
            )
        context = {
            **self.admin_site.each_context(request),
            "kb": kb,
            "form": form,
            "result": result,
            "opts": self.model._meta,
            "title": f"Test retrieval in {kb}",
        }
        return render(request, "admin/knowledge/knowledgebase/search.html", context)

    def reindex_view(self, request: HttpRequest, kb_id: int) -> HttpResponse:
        kb = self._kb_for(request, kb_id, change=True)
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:knowledge_knowledgebase_change", args=[kb.pk]))
        queued = knowledge_base_reindex(knowledge_base=kb)
        messages.success(request, f"Queued {queued} document(s) for reindexing; searches keep working meanwhile.")
        return HttpResponseRedirect(reverse("admin:knowledge_knowledgebase_change", args=[kb.pk]))


@admin.register(Document, site=tenant_admin_site)
class DocumentAdmin(admin.ModelAdmin):
    change_list_template = "admin/knowledge/document/change_list.html"
    list_display = ["title", "knowledge_base", "status_progress", "pages", "chunk_count", "short_error", "updated_at"]
    list_filter = ["status", "knowledge_base", "language"]
    search_fields = ["title", "file__original_name", "error"]
    list_select_related = ["knowledge_base"]
    actions = ["retry_selected", "cancel_selected", "reindex_selected", "delete_selected_documents"]
    fields = [
        "title",
        "knowledge_base",
        "file_link",
        "status_progress",
        "error",
        "pages",
        "chunk_count",
        "language",
        "attempts",
        "uploaded_by",
        "created_at",
        "ingested_at",
    ]
    readonly_fields = [f for f in fields if f != "title"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # documents are added by uploading to a knowledge base

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # replaced: deleting goes through the service
        return actions

    @admin.display(description="Status", ordering="status")
    def status_progress(self, obj: Document) -> str:
        return progress_bar(obj)

    @admin.display(description="Error")
    def short_error(self, obj: Document) -> str:
        return obj.error[:120] + ("…" if len(obj.error) > 120 else "")

    @admin.display(description="File")
    def file_link(self, obj: Document) -> str:
        return format_html(
            '<a href="{}">{}</a> ({})', reverse("file_download", args=[obj.file_id]), obj.file, obj.file.content_type
        )

    def delete_model(self, request: HttpRequest, obj: Document) -> None:
        document_delete(document=obj)

    @admin.action(description="Retry selected failed or cancelled documents")
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        _apply(request, queryset, document_retry, "Queued again")

    @admin.action(description="Cancel the ingestion of selected documents")
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        _apply(request, queryset, document_cancel, "Cancelled")

    @admin.action(description="Reindex selected documents")
    def reindex_selected(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        _apply(request, queryset, document_reindex, "Queued for reindexing")

    @admin.action(description="Delete selected documents (with their chunks and files)", permissions=["delete"])
    def delete_selected_documents(self, request: HttpRequest, queryset: QuerySet[Document]) -> None:
        count = 0
        for document in queryset.select_related("knowledge_base", "file"):
            document_delete(document=document)
            count += 1
        messages.success(request, f"Deleted {count} document(s).")


@admin.register(Chunk, site=tenant_admin_site)
class ChunkAdmin(admin.ModelAdmin):
    """Read-only: what ingestion made of a document, for checking chunking and retrieval."""

    list_display = ["document", "position", "page", "heading_path", "token_count", "live", "snippet"]
    list_filter = ["live", "knowledge_base"]
    search_fields = ["text", "heading_path", "document__title"]
    list_select_related = ["document"]
    fields = ["knowledge_base", "document", "generation", "live", "position", "page", "heading_path", "token_count"]
    readonly_fields = [*fields, "text"]
    show_full_result_count = False

    def get_fields(self, request: HttpRequest, obj: Chunk | None = None) -> list:
        return [*self.fields, "text"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Chunk | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Chunk | None = None) -> bool:
        return False

    @admin.display(description="Text")
    def snippet(self, obj: Chunk) -> str:
        return obj.text[:100] + ("…" if len(obj.text) > 100 else "")
