from django.contrib import admin
from django.http import HttpRequest

from conversations.models import Attachment, Citation, Conversation, Message, MessageUnit
from nexent_site.admin_sites import tenant_admin_site


class _ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class MessageInline(_ReadOnlyInline):
    model = Message
    fields = ["created_at", "role", "status", "content", "feedback", "tokens_in", "tokens_out", "run"]
    readonly_fields = fields
    show_change_link = True


class UnitInline(_ReadOnlyInline):
    model = MessageUnit
    fields = ["position", "kind", "data"]
    readonly_fields = fields


class CitationInline(_ReadOnlyInline):
    model = Citation
    fields = ["index", "document_title", "page", "score"]
    readonly_fields = fields


class AttachmentInline(_ReadOnlyInline):
    model = Attachment
    fields = ["file", "status", "error", "truncated"]
    readonly_fields = fields


@admin.register(Conversation, site=tenant_admin_site)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["__str__", "user", "agent", "archived", "updated_at"]
    list_filter = ["archived", "agent", ("updated_at", admin.DateFieldListFilter)]
    search_fields = ["title", "user__email", "messages__content"]
    readonly_fields = ["user", "agent", "created_at", "updated_at"]
    fields = ["title", "archived", "user", "agent", "created_at", "updated_at"]
    inlines = [MessageInline]
    date_hierarchy = "updated_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(Message, site=tenant_admin_site)
class MessageAdmin(admin.ModelAdmin):
    """Answers with their feedback, steps and citations; read-only."""

    list_display = ["__str__", "conversation", "role", "status", "feedback", "created_at"]
    list_filter = ["role", "status", "feedback", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["content", "feedback_comment", "conversation__title"]
    readonly_fields = [
        "conversation",
        "role",
        "content",
        "status",
        "error",
        "run",
        "tokens_in",
        "tokens_out",
        "feedback",
        "feedback_comment",
        "created_at",
    ]
    fields = readonly_fields
    inlines = [AttachmentInline, UnitInline, CitationInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
