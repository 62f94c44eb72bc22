"""REST API of agents (`chat` reads published agents; `admin` sees drafts, creates, edits and publishes),
model providers (`admin`) and runs (`chat`: one's own runs; `admin`: every run of the organisation), with
run events as JSON or as server-sent events."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from django.db import connection
from django.db.models import Q
from django.http import HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.filters import OrderingFilter
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.viewsets import GenericViewSet

from agents.models import Agent, AgentRun, AgentVersion, ModelProvider
from agents.relay import run_events_sse, sse_format
from agents.runtime.events import TERMINAL_EVENT
from agents.selectors import agents_visible, run_events_after, run_get_for_user, runs_for_user
from agents.serializers import (
    AgentCreateSerializer,
    AgentListQuerySerializer,
    AgentPublishSerializer,
    AgentSerializer,
    AgentUpdateSerializer,
    AgentVersionSerializer,
    ProviderSerializer,
    ProviderUpdateSerializer,
    RunEventsQuerySerializer,
    RunEventsSerializer,
    RunListQuerySerializer,
    RunSerializer,
)
from agents.services.agents import agent_create, agent_publish, agent_update
from agents.services.providers import provider_delete, provider_save, provider_test
from agents.services.runs import run_cancel
from api.permissions import request_scopes
from api.scopes import Scope

EVENT_STREAM = "text/event-stream"
LAST_EVENT_ID_RE = re.compile(r"^[0-9]{1,9}$")
SSE_DESCRIPTION = (
    "Server-sent events: `id: <seq>`, `event: <type>`, `data: <event JSON>`, until `run_finished`. "
    "Reconnect with `Last-Event-ID` to resume after the last event seen."
)


# --- server-sent events -------------------------------------------------------------------------------------
class EventStreamNegotiation(DefaultContentNegotiation):
    """Every DRF answer of these views is JSON, errors included; whether to stream server-sent events
    (`Accept: text/event-stream`) is the view's own decision, so a client asking for a stream gets a JSON
    error rather than a 406 when something is wrong."""

    def select_renderer(self, request: Request, renderers: list, format_suffix: str | None = None) -> tuple:
        return renderers[0], renderers[0].media_type


def wants_event_stream(request: Request) -> bool:
    return EVENT_STREAM in request.headers.get("Accept", "")


def last_event_id(request: Request, default: int = 0) -> int:
    value = request.headers.get("Last-Event-ID", "").strip()
    return int(value) if LAST_EVENT_ID_RE.match(value) else default


async def _opened(run_id: str, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    # A comment first: the server sends the headers with the first bytes, and the client should know at once
    # that the stream is open, before the worker has produced anything.
    yield f": run {run_id}\n\n".encode()
    async for chunk in events:
        yield chunk


def event_stream_response(run: AgentRun, after: int = 0) -> HttpResponse | StreamingHttpResponse:
    """The run's events after `after` as server-sent events (in the current tenant): live until
    `run_finished`, or at once for a finished run (whose live stream may have expired)."""
    response: HttpResponse | StreamingHttpResponse
    if run.is_finished:
        events = run_events_after(run=run, after=after)
        complete = events[-1]["type"] == TERMINAL_EVENT if events else 0 < run.last_seq <= after
        if complete:
            response = HttpResponse(b"".join(sse_format(event) for event in events), content_type=EVENT_STREAM)
            response["Cache-Control"] = "no-cache"
            return response
    run_id = str(run.id)
    response = StreamingHttpResponse(
        _opened(run_id, run_events_sse(connection.schema_name, run_id, after)), content_type=EVENT_STREAM
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


def has_admin_scope(request: Request) -> bool:
    return Scope.ADMIN in request_scopes(request)


# --- agents -------------------------------------------------------------------------------------------------
@extend_schema_view(
    list=extend_schema(
        summary="List agents",
        description="With `chat`: the published agents. With `admin`: every agent, drafts included, with "
        "each one's draft.",
        parameters=[AgentListQuerySerializer],
    ),
    retrieve=extend_schema(summary="An agent"),
)
class AgentViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, GenericViewSet):
    read_scope = Scope.CHAT
    write_scope = Scope.ADMIN
    serializer_class = AgentSerializer
    lookup_field = "slug"
    lookup_value_regex = "[-a-zA-Z0-9_]{1,50}"
    filter_backends = [OrderingFilter]
    ordering_fields = ["name", "slug", "created_at", "updated_at"]
    ordering = ["name", "slug"]
    parser_classes = [JSONParser]
    http_method_names = ["get", "post", "patch", "head"]

    def include_drafts(self) -> bool:
        return not getattr(self, "swagger_fake_view", False) and has_admin_scope(self.request)

    def get_queryset(self) -> Any:
        agents = agents_visible(include_drafts=self.include_drafts())
        if self.action == "list":
            query = AgentListQuerySerializer(data=self.request.query_params)
            query.is_valid(raise_exception=True)
            text = query.validated_data.get("q", "").strip()
            if text:
                agents = agents.filter(
                    Q(name__icontains=text) | Q(slug__icontains=text) | Q(description__icontains=text)
                )
        return agents

    def get_serializer_context(self) -> dict[str, Any]:
        return {**super().get_serializer_context(), "include_drafts": self.include_drafts()}

    def _respond(self, agent: Agent, status_code: int = status.HTTP_200_OK) -> Response:
        agent = agents_visible(include_drafts=True).get(pk=agent.pk)
        return Response(self.get_serializer(agent).data, status=status_code)

    @extend_schema(
        summary="Create an agent (a draft; publish it to use it)",
        request=AgentCreateSerializer,
        responses={201: AgentSerializer},
    )
    def create(self, request: Request) -> Response:
        serializer = AgentCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        fields, tools, sub_agents = serializer.split()
        agent = agent_create(slug=serializer.validated_data["slug"], fields=fields, tools=tools, sub_agents=sub_agents)
        return self._respond(agent, status.HTTP_201_CREATED)

    @extend_schema(
        summary="Edit an agent's draft",
        description="Runs keep using the published version until the draft is published. `tools` and "
        "`sub_agents`, when given, replace the whole list.",
        request=AgentUpdateSerializer,
        responses={200: AgentSerializer},
    )
    def partial_update(self, request: Request, slug: str) -> Response:
        agent = self.get_object()
        serializer = AgentUpdateSerializer(agent, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        fields, tools, sub_agents = serializer.split()
        return self._respond(agent_update(agent=agent, fields=fields, tools=tools, sub_agents=sub_agents))

    @extend_schema(
        summary="Publish the draft as the next version",
        request=AgentPublishSerializer,
        responses={201: AgentVersionSerializer},
    )
    @action(detail=True, methods=["post"])
    def publish(self, request: Request, slug: str) -> Response:
        agent = self.get_object()
        serializer = AgentPublishSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        version = agent_publish(agent=agent, note=serializer.validated_data["note"], user_email=request.user.email)
        version = AgentVersion.objects.select_related("agent").get(pk=version.pk)
        return Response(
            AgentVersionSerializer(version, context=self.get_serializer_context()).data,
            status=status.HTTP_201_CREATED,
        )

    @extend_schema(summary="The agent's published versions, newest first", responses=AgentVersionSerializer(many=True))
    @action(detail=True, methods=["get"])
    def versions(self, request: Request, slug: str) -> Response:
        agent = self.get_object()
        versions = AgentVersion.objects.filter(agent=agent).select_related("agent").order_by("-number")
        page = self.paginate_queryset(versions)
        serializer = AgentVersionSerializer(page, many=True, context=self.get_serializer_context())
        return self.get_paginated_response(serializer.data)


# --- providers ----------------------------------------------------------------------------------------------
@extend_schema_view(
    list=extend_schema(summary="List model providers"),
    retrieve=extend_schema(summary="A model provider"),
    destroy=extend_schema(summary="Delete a model provider nothing uses"),
)
class ProviderViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    GenericViewSet,
):
    read_scope = Scope.ADMIN
    write_scope = Scope.ADMIN
    serializer_class = ProviderSerializer
    queryset = ModelProvider.objects.order_by("kind", "name")
    filter_backends = [OrderingFilter]
    ordering_fields = ["name", "kind", "created_at"]
    ordering = ["kind", "name"]
    parser_classes = [JSONParser]
    http_method_names = ["get", "post", "patch", "delete", "head"]

    @extend_schema(summary="Add a model provider", request=ProviderSerializer, responses={201: ProviderSerializer})
    def create(self, request: Request) -> Response:
        serializer = ProviderSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        api_key = data.pop("api_key", None)
        provider = provider_save(provider=ModelProvider(**data), api_key=api_key)
        return Response(ProviderSerializer(provider).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Change a model provider",
        description="`api_key`: omit to keep the stored key, an empty string removes it. The kind is fixed.",
        request=ProviderUpdateSerializer,
        responses={200: ProviderSerializer},
    )
    def partial_update(self, request: Request, pk: str) -> Response:
        provider = self.get_object()
        serializer = ProviderUpdateSerializer(provider, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        api_key = data.pop("api_key", None)
        for name, value in data.items():
            setattr(provider, name, value)
        return Response(ProviderSerializer(provider_save(provider=provider, api_key=api_key)).data)

    def perform_destroy(self, instance: ModelProvider) -> None:
        provider_delete(provider=instance)

    @extend_schema(
        summary="Test connectivity with a real model call",
        description="Records `status` (available or unavailable, with `status_error`) and, for embedding "
        "providers, `dimension`.",
        request=None,
        responses={200: ProviderSerializer},
    )
    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str) -> Response:
        return Response(ProviderSerializer(provider_test(provider=self.get_object())).data)


# --- runs ---------------------------------------------------------------------------------------------------
RUN_ID = OpenApiParameter("id", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The run's id")


@extend_schema_view(
    list=extend_schema(
        summary="List runs",
        description="With `admin`: every run; otherwise one's own.",
        parameters=[RunListQuerySerializer],
    ),
    retrieve=extend_schema(summary="A run: status, output, tokens, error", parameters=[RUN_ID]),
)
class RunViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, GenericViewSet):
    """Runs started by the caller (by its user), or with the `admin` scope every run."""

    read_scope = Scope.CHAT
    write_scope = Scope.CHAT
    serializer_class = RunSerializer
    filter_backends = [OrderingFilter]
    ordering_fields = ["created_at", "status", "duration_ms", "tokens_in", "tokens_out"]
    ordering = ["-created_at"]
    parser_classes = [JSONParser]
    content_negotiation_class = EventStreamNegotiation
    http_method_names = ["get", "post", "head"]

    def get_queryset(self) -> Any:
        if getattr(self, "swagger_fake_view", False):
            return AgentRun.objects.none()
        runs = runs_for_user(user=self.request.user, see_all=has_admin_scope(self.request))
        if self.action == "list":
            query = RunListQuerySerializer(data=self.request.query_params)
            query.is_valid(raise_exception=True)
            if "status" in query.validated_data:
                runs = runs.filter(status=query.validated_data["status"])
            if "agent" in query.validated_data:
                runs = runs.filter(agent__slug=query.validated_data["agent"])
        return runs

    def get_object(self) -> AgentRun:
        run = run_get_for_user(run_id=self.kwargs["pk"], user=self.request.user, see_all=has_admin_scope(self.request))
        if run is None:
            raise NotFound("No such run.")
        return run

    @extend_schema(
        summary="The run's events after a sequence number",
        description="JSON by default (the events kept for the run: every event while its live stream is kept, "
        "then every event but the text deltas). With `Accept: text/event-stream`: the events as server-sent "
        "events, live until `run_finished`.",
        parameters=[
            RUN_ID,
            RunEventsQuerySerializer,
            OpenApiParameter(
                "Last-Event-ID",
                OpenApiTypes.INT,
                OpenApiParameter.HEADER,
                required=False,
                description="Server-sent events: resume after this seq (instead of `after`)",
            ),
        ],
        responses={
            200: RunEventsSerializer,
            (200, EVENT_STREAM): OpenApiResponse(OpenApiTypes.STR, description=SSE_DESCRIPTION),
        },
    )
    @action(detail=True, methods=["get"])
    def events(self, request: Request, pk: str) -> Any:
        run = self.get_object()
        query = RunEventsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        after = query.validated_data["after"]
        if wants_event_stream(request):
            return event_stream_response(run, last_event_id(request, after))
        events = run_events_after(run=run, after=after)
        return Response(RunEventsSerializer({"run_id": run.id, "status": run.status, "events": events}).data)

    @extend_schema(
        summary="Stop a run",
        description="A queued run is cancelled at once; a running one stops at its next event and keeps its "
        "partial output.",
        parameters=[RUN_ID],
        request=None,
        responses={202: RunSerializer},
    )
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str) -> Response:
        run = self.get_object()
        if not run.is_finished:
            run = run_cancel(run=run)
        return Response(RunSerializer(run).data, status=status.HTTP_202_ACCEPTED)
