"""REST API representations of conversations and their messages. Input serializers are strict (unknown
fields are refused by name); the services do the writing."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import serializers

from agents.models import Agent
from agents.serializers import NameRelatedField
from api.serializers import StrictSerializer
from conversations.models import Attachment, Citation, Conversation, Message, MessageUnit
from conversations.selectors import agents_published


class ConversationAgentSerializer(serializers.ModelSerializer):
    class Meta:
        model = Agent
        fields = ["slug", "name"]


class ConversationSerializer(serializers.ModelSerializer):
    agent = ConversationAgentSerializer(read_only=True)

    class Meta:
        model = Conversation
        fields = ["id", "title", "agent", "archived", "created_at", "updated_at"]


class ConversationCreateSerializer(StrictSerializer):
    agent = NameRelatedField(slug_field="slug", queryset=agents_published(), help_text="A published agent's slug")
    title = serializers.CharField(max_length=200, allow_blank=True, required=False, default="")


class ConversationUpdateSerializer(StrictSerializer):
    title = serializers.CharField(max_length=200, allow_blank=True, required=False)
    archived = serializers.BooleanField(required=False)


class ConversationListQuerySerializer(serializers.Serializer):
    q = serializers.CharField(
        max_length=200, required=False, allow_blank=True, help_text="Matches titles and the text of messages"
    )
    archived = serializers.BooleanField(required=False, default=False, help_text="List archived conversations instead")


class CitationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Citation
        fields = ["index", "document_id", "document_title", "chunk_id", "page", "score", "text"]


class AttachmentSerializer(serializers.ModelSerializer):
    file_id = serializers.UUIDField(read_only=True)
    name = serializers.CharField(source="file.original_name", read_only=True)
    size = serializers.IntegerField(source="file.size", read_only=True)
    content_type = serializers.CharField(source="file.content_type", read_only=True)

    class Meta:
        model = Attachment
        fields = ["id", "file_id", "name", "size", "content_type", "status", "error", "truncated"]


class MessageUnitSerializer(serializers.ModelSerializer):
    class Meta:
        model = MessageUnit
        fields = ["position", "kind", "data"]


class MessageSerializer(serializers.ModelSerializer):
    run_id = serializers.UUIDField(read_only=True, allow_null=True, help_text="The run writing this answer")
    citations = CitationSerializer(many=True, read_only=True)
    attachments = AttachmentSerializer(many=True, read_only=True)
    units = MessageUnitSerializer(
        many=True, read_only=True, help_text="What the agent did on the way to its answer, in order"
    )

    class Meta:
        model = Message
        fields = [
            "id",
            "role",
            "content",
            "status",
            "error",
            "run_id",
            "tokens_in",
            "tokens_out",
            "feedback",
            "created_at",
            "citations",
            "attachments",
            "units",
        ]


class MessageSendSerializer(StrictSerializer):
    content = serializers.CharField(
        max_length=settings.CHAT_MAX_MESSAGE_CHARS, allow_blank=True, required=False, default=""
    )

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if not data.get("content", "").strip() and not data.get("files"):
            raise serializers.ValidationError({"content": ["Write a message first."]})
        return data


class MessageSendFilesSerializer(MessageSendSerializer):
    files = serializers.ListField(
        child=serializers.FileField(),
        max_length=settings.CHAT_MAX_ATTACHMENTS,
        required=False,
        default=list,
        help_text="Files the agent reads with the message",
    )


class MessageSendQuerySerializer(serializers.Serializer):
    stream = serializers.BooleanField(
        required=False, default=False, help_text="Answer with the run's events as server-sent events"
    )


class MessageSentSerializer(serializers.Serializer):
    user_message = MessageSerializer()
    assistant_message = MessageSerializer()
    run_id = serializers.UUIDField()
