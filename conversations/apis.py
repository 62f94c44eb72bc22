"""REST API of conversations and their messages (`chat` scope). Every conversation is its user's own: an
id of anyone else's, in this organisation or another, is not found. Sending a message starts the agent's
run; the answer is followed with the run's events (as server-sent events right away, or later), or by
reading the messages again."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.filters import OrderingFilter
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from agents.apis import EVENT_STREAM, SSE_DESCRIPTION, EventStreamNegotiation, event_stream_response, wants_event_stream
from agents.models import AgentRun
from api.idempotency import HEADER as IDEMPOTENCY_HEADER
from api.idempotency import IDEMPOTENCY_KEY_PARAMETER, idempotent
from api.models import ApiKey, IdempotentRequest
from api.scopes import Scope
from conversations.models import Conversation, Message
from conversations.selectors import (
    conversation_get_for_user,
    conversations_for_user,
    message_get_in_conversation,
    messages_of_conversation,
)
from conversations.serializers import (
    ConversationCreateSerializer,
    ConversationListQuerySerializer,
    ConversationSerializer,
    ConversationUpdateSerializer,
    MessageSendFilesSerializer,
    MessageSendQuerySerializer,
    MessageSendSerializer,
    MessageSentSerializer,
    MessageSerializer,
)
from conversations.services import (
    conversation_delete,
    conversation_message_send,
    conversation_start,
    conversation_update,
    message_stop,
)

CONVERSATION_ID = OpenApiParameter(
    "conversation_id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The conversation's id"
)
MESSAGE_ID = OpenApiParameter("id", OpenApiTypes.INT, OpenApiParameter.PATH, description="The message's id")


def _conversation_or_404(request: Request, conversation_id: Any) -> Conversation:
    conversation = conversation_get_for_user(conversation_id=conversation_id, user=request.user)
    if conversation is None:
        raise NotFound("No such conversation.")
    return conversation


@extend_schema_view(
    list=extend_schema(summary="List one's conversations, newest first", parameters=[ConversationListQuerySerializer]),
    retrieve=extend_schema(summary="A conversation"),
    destroy=extend_schema(summary="Delete a conversation with its messages and attached files"),
)
class ConversationViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    GenericViewSet,
):
    read_scope = Scope.CHAT
    write_scope = Scope.CHAT
    serializer_class = ConversationSerializer
    filter_backends = [OrderingFilter]
    ordering_fields = ["updated_at", "created_at", "title"]
    ordering = ["-updated_at"]
    parser_classes = [JSONParser]
    http_method_names = ["get", "post", "patch", "delete", "head"]

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Conversation.objects.none()
        query = ConversationListQuerySerializer(data=self.request.query_params)
        query.is_valid(raise_exception=True)
        return conversations_for_user(
            user=self.request.user,
            query=query.validated_data.get("q", ""),
            archived=query.validated_data["archived"],
        )

    def get_object(self) -> Conversation:
        return _conversation_or_404(self.request, self.kwargs["pk"])

    @extend_schema(
        summary="Start a conversation with a published agent",
        request=ConversationCreateSerializer,
        responses={201: ConversationSerializer},
    )
    def create(self, request: Request) -> Response:
        serializer = ConversationCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = conversation_start(user=request.user, **serializer.validated_data)
        return Response(ConversationSerializer(conversation).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Rename, archive or restore a conversation",
        request=ConversationUpdateSerializer,
        responses={200: ConversationSerializer},
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        conversation = self.get_object()
        serializer = ConversationUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        conversation = conversation_update(conversation=conversation, **serializer.validated_data)
        return Response(ConversationSerializer(conversation).data)

    def perform_destroy(self, instance: Conversation) -> None:
        conversation_delete(conversation=instance)


def _replay_stream(view: Any, request: Request, record: IdempotentRequest) -> Any:
    """A retried streaming send: the same run's events again, from the start."""
    run = AgentRun.objects.filter(pk=record.run_id).first()
    if run is None:
        raise NotFound("The run this request started no longer exists.")
    return event_stream_response(run)


@extend_schema_view(
    list=extend_schema(
        summary="The conversation's messages, oldest first",
        description="Each with its status (pending, streaming, completed, failed, stopped), content, "
        "citations, attachments, units (the agent's steps) and tokens.",
        parameters=[CONVERSATION_ID],
    ),
    retrieve=extend_schema(summary="A message", parameters=[CONVERSATION_ID, MESSAGE_ID]),
)
class MessageViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, GenericViewSet):
    read_scope = Scope.CHAT
    write_scope = Scope.CHAT
    serializer_class = MessageSerializer
    filter_backends = [OrderingFilter]
    ordering_fields = ["created_at", "id"]
    ordering = ["created_at", "id"]
    parser_classes = [JSONParser, MultiPartParser]
    content_negotiation_class = EventStreamNegotiation
    http_method_names = ["get", "post", "head"]

    def conversation(self) -> Conversation:
        return _conversation_or_404(self.request, self.kwargs["conversation_id"])

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return Message.objects.none()
        return messages_of_conversation(conversation=self.conversation())

    def get_object(self) -> Message:
        message = message_get_in_conversation(conversation=self.conversation(), message_id=self.kwargs["pk"])
        if message is None:
            raise NotFound("No such message.")
        return message

    @extend_schema(
        summary="Send a message: start the agent's answer",
        description="JSON `{content}`, or multipart with `content` and `files` (attachments). Answers at once "
        "with both messages (the answer pending) and the run's id; follow the run at "
        "`/api/v1/runs/{run_id}/events/`, or read the messages again. With `?stream=true` or "
        f"`Accept: {EVENT_STREAM}` the answer is instead the run's events as server-sent events. One turn at "
        f"a time per conversation (409 while an answer is being written). Send an `{IDEMPOTENCY_HEADER}` to "
        "retry safely: a retry gets the first answer (a stream is replayed from the start) and starts nothing.",
        parameters=[
            CONVERSATION_ID,
            MessageSendQuerySerializer,
            IDEMPOTENCY_KEY_PARAMETER,
        ],
        request={"application/json": MessageSendSerializer, "multipart/form-data": MessageSendFilesSerializer},
        responses={
            201: MessageSentSerializer,
            (200, EVENT_STREAM): OpenApiResponse(OpenApiTypes.STR, description=SSE_DESCRIPTION),
        },
    )
    @idempotent(replay_stream=_replay_stream)
    def create(self, request: Request, conversation_id: str) -> Any:
        conversation = self.conversation()
        query = MessageSendQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        multipart = request.content_type.startswith("multipart/")
        serializer = (MessageSendFilesSerializer if multipart else MessageSendSerializer)(data=request.data)
        serializer.is_valid(raise_exception=True)
        user_message, assistant = conversation_message_send(
            conversation=conversation,
            user=request.user,
            content=serializer.validated_data["content"],
            uploads=serializer.validated_data.get("files", []),
            api_key=request.auth if isinstance(request.auth, ApiKey) else None,
        )
        if query.validated_data["stream"] or wants_event_stream(request):
            response = event_stream_response(assistant.run)
            response.run_id = assistant.run_id
            return response
        body = {"user_message": user_message, "assistant_message": assistant, "run_id": assistant.run_id}
        return Response(MessageSentSerializer(body).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Stop the answer being written",
        description="The run stops at its next event; the message keeps its partial text, marked stopped.",
        parameters=[CONVERSATION_ID, MESSAGE_ID],
        request=None,
        responses={202: MessageSerializer},
    )
    @action(detail=True, methods=["post"])
    def stop(self, request: Request, conversation_id: str, pk: str) -> Response:
        message = message_stop(message=self.get_object())
        return Response(MessageSerializer(message).data, status=status.HTTP_202_ACCEPTED)
