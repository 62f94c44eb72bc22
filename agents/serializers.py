"""REST API representations of agents, their versions, model providers and runs. Input serializers are
strict (unknown fields are refused by name); the services do the writing."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from agents.models import Agent, AgentMode, AgentRun, AgentVersion, McpServer, ModelProvider, ProviderKind
from agents.services.agents import EDITABLE_FIELDS, agent_mode_unused
from api.serializers import StrictModelSerializer, StrictSerializer

MAX_JSON_DEPTH = 20


def storable_text(value: str) -> bool:
    """Whether PostgreSQL can store (or compare against) this text: no NUL, no unpaired surrogate."""
    return "\x00" not in value and not any("\ud800" <= char <= "\udfff" for char in value)


def json_storable(value: Any, depth: int = 0) -> Any:
    """Refuse JSON that PostgreSQL's jsonb cannot store (NUL characters, lone surrogates) or that nests
    absurdly deep, with a validation error instead of a database error."""
    if depth > MAX_JSON_DEPTH:
        raise serializers.ValidationError(f"Nested more than {MAX_JSON_DEPTH} levels deep.")
    if isinstance(value, str):
        if not storable_text(value):
            raise serializers.ValidationError("Text may not contain NUL or unpaired surrogate characters.")
    elif isinstance(value, dict):
        for key, item in value.items():
            json_storable(key, depth + 1)
            json_storable(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            json_storable(item, depth + 1)
    return value


class NameRelatedField(serializers.SlugRelatedField):
    """A row named by a slug or name. Text the database cannot compare (NUL, lone surrogates, very long)
    is simply not found, rather than sent to the database."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and (len(data) > 300 or not storable_text(data)):
            self.fail("does_not_exist", slug_name=self.slug_field, value=data[:300])
        return super().to_internal_value(data)


# --- agents -------------------------------------------------------------------------------------------------
class AgentToolSerializer(StrictSerializer):
    tool = serializers.CharField(
        max_length=64, help_text="A built-in tool's name, or `mcp` for a tool of an MCP server"
    )
    config = serializers.JSONField(
        required=False, default=dict, validators=[json_storable], help_text="The tool's settings (a JSON object)"
    )
    mcp_server = NameRelatedField(
        slug_field="name",
        queryset=McpServer.objects.all(),
        allow_null=True,
        required=False,
        default=None,
        help_text="For `mcp` tools: the MCP server's name",
    )
    mcp_tool_name = serializers.CharField(max_length=200, allow_blank=True, required=False, default="")
    enabled = serializers.BooleanField(required=False, default=True)


class AgentVersionSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = AgentVersion
        fields = ["number", "note", "created_by", "created_at"]


class AgentDraftSerializer(serializers.ModelSerializer):
    """The editable draft, as the `admin` scope sees it."""

    tools = AgentToolSerializer(many=True, read_only=True)
    sub_agents = serializers.SerializerMethodField(help_text="Slugs of the agents this one may delegate to")
    unused_in_mode = serializers.SerializerMethodField(
        help_text="What of the draft its mode will not use (a chat-mode agent's other tools and sub-agents)"
    )

    class Meta:
        model = Agent
        fields = [
            "role_prompt",
            "constraints_prompt",
            "few_shot_examples",
            "chat_provider",
            "temperature",
            "max_tokens",
            "max_steps",
            "run_timeout_s",
            "tools",
            "sub_agents",
            "unused_in_mode",
        ]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_unused_in_mode(self, agent: Agent) -> list[str]:
        return agent_mode_unused(agent)

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_sub_agents(self, agent: Agent) -> list[str]:
        return [link.child.slug for link in agent.sub_agent_links.all()]


class AgentSerializer(serializers.ModelSerializer):
    state = serializers.SerializerMethodField(help_text="`draft` until the agent's first publish")
    published_version = AgentVersionSummarySerializer(read_only=True, allow_null=True)
    draft = serializers.SerializerMethodField(help_text="The editable draft; only with the `admin` scope, else null")

    class Meta:
        model = Agent
        fields = [
            "slug",
            "name",
            "description",
            "mode",
            "greeting",
            "example_questions",
            "state",
            "published_version",
            "draft",
            "created_at",
            "updated_at",
        ]

    @extend_schema_field(serializers.ChoiceField(choices=["draft", "published"]))
    def get_state(self, agent: Agent) -> str:
        return "published" if agent.published_version_id else "draft"

    @extend_schema_field(AgentDraftSerializer(allow_null=True))
    def get_draft(self, agent: Agent) -> dict | None:
        if not self.context.get("include_drafts"):
            return None
        if getattr(self, "_draft", None) is None:
            # one draft serializer for the whole list: building a ModelSerializer's fields costs ~0.7 ms
            self._draft = AgentDraftSerializer(context=self.context)
        return self._draft.to_representation(agent)


class AgentWriteSerializer(StrictModelSerializer):
    example_questions = serializers.ListField(
        child=serializers.CharField(max_length=500), max_length=20, required=False
    )
    chat_provider = serializers.PrimaryKeyRelatedField(
        queryset=ModelProvider.objects.filter(kind=ProviderKind.CHAT),
        allow_null=True,
        required=False,
        help_text="A chat provider's id; null: the organisation's default chat provider",
    )
    mode = serializers.ChoiceField(choices=AgentMode.choices, required=False)
    tools = AgentToolSerializer(many=True, required=False, help_text="Replaces every tool of the agent")
    sub_agents = serializers.ListField(
        child=serializers.CharField(max_length=50),
        max_length=50,
        required=False,
        help_text="Slugs of the agents this one may delegate to; replaces the current list",
    )

    class Meta:
        model = Agent
        fields = ["slug", *EDITABLE_FIELDS, "tools", "sub_agents"]
        validators: list = []  # the service checks uniqueness and constraints, naming the field

    def split(self) -> tuple[dict[str, Any], list[dict] | None, list[str] | None]:
        """(editable fields, tools, sub-agent slugs) from the validated data."""
        data = dict(self.validated_data)
        data.pop("slug", None)
        return data, data.pop("tools", None), data.pop("sub_agents", None)


class AgentCreateSerializer(AgentWriteSerializer):
    class Meta(AgentWriteSerializer.Meta):
        extra_kwargs = {"slug": {"required": True}, "name": {"required": True}}


class AgentUpdateSerializer(AgentWriteSerializer):
    class Meta(AgentWriteSerializer.Meta):
        fields = [*EDITABLE_FIELDS, "tools", "sub_agents"]


class AgentVersionSerializer(serializers.ModelSerializer):
    is_published = serializers.SerializerMethodField(help_text="Whether this is the version runs use")
    spec = serializers.SerializerMethodField(help_text="The snapshot itself; only with the `admin` scope, else null")

    class Meta:
        model = AgentVersion
        fields = ["number", "note", "created_by", "created_at", "is_published", "spec"]

    def get_is_published(self, version: AgentVersion) -> bool:
        return version.agent.published_version_id == version.pk

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_spec(self, version: AgentVersion) -> dict | None:
        return version.spec if self.context.get("include_drafts") else None


class AgentPublishSerializer(StrictSerializer):
    note = serializers.CharField(max_length=200, allow_blank=True, required=False, default="")


class AgentListQuerySerializer(serializers.Serializer):
    q = serializers.CharField(
        max_length=200, required=False, allow_blank=True, help_text="Matches names, slugs and descriptions"
    )


# --- providers ----------------------------------------------------------------------------------------------
class ProviderSerializer(StrictModelSerializer):
    api_key = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        allow_null=True,
        max_length=500,
        trim_whitespace=True,
        help_text="Write-only: stored encrypted, never returned. Omit or null to keep the stored key; "
        "an empty string removes it.",
    )
    masked_key = serializers.CharField(read_only=True, help_text="The key's last characters, e.g. `…a1b2`")
    has_api_key = serializers.SerializerMethodField()
    extra_headers = serializers.JSONField(
        required=False, validators=[json_storable], help_text='Extra HTTP headers, e.g. {"X-Org": "acme"}'
    )

    class Meta:
        model = ModelProvider
        fields = [
            "id",
            "name",
            "kind",
            "base_url",
            "model_name",
            "api_key",
            "masked_key",
            "has_api_key",
            "timeout_s",
            "max_concurrency",
            "context_window",
            "extra_headers",
            "tool_choice",
            "stream_tool_calls",
            "embedding_input_type",
            "is_default",
            "is_builtin",
            "dimension",
            "status",
            "status_error",
            "status_checked_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["is_builtin", "dimension", "status", "status_error", "status_checked_at"]
        validators: list = []  # provider_save keeps one default per kind; the service names the field

    def get_has_api_key(self, provider: ModelProvider) -> bool:
        return bool(provider.api_key)


class ProviderUpdateSerializer(ProviderSerializer):
    class Meta(ProviderSerializer.Meta):
        read_only_fields = [*ProviderSerializer.Meta.read_only_fields, "kind"]


# --- runs ---------------------------------------------------------------------------------------------------
class RunSerializer(serializers.ModelSerializer):
    agent = serializers.CharField(source="agent.slug", read_only=True, help_text="The agent's slug")
    version = serializers.IntegerField(
        source="version.number", read_only=True, allow_null=True, help_text="The agent version that ran (null: a draft)"
    )
    input = serializers.ListField(child=serializers.DictField(), read_only=True, help_text="The messages it was given")

    class Meta:
        model = AgentRun
        fields = [
            "id",
            "agent",
            "version",
            "trigger",
            "status",
            "input",
            "output",
            "error",
            "tokens_in",
            "tokens_out",
            "usage_estimated",
            "ttft_ms",
            "duration_ms",
            "last_seq",
            "end_user",
            "created_at",
            "started_at",
            "finished_at",
        ]
        read_only_fields = fields


class RunEventSerializer(serializers.Serializer):
    type = serializers.CharField(help_text="run_started, step_started, text_delta, tool_call, tool_result, …")
    run_id = serializers.UUIDField()
    seq = serializers.IntegerField(help_text="1, 2, 3, … within the run")
    ts = serializers.FloatField(help_text="Unix time, seconds")
    agent = serializers.CharField(help_text="Sub-agent path; empty for the run's own agent")
    data = serializers.DictField()


class RunEventsSerializer(serializers.Serializer):
    run_id = serializers.UUIDField()
    status = serializers.CharField()
    events = RunEventSerializer(many=True)


class RunEventsQuerySerializer(serializers.Serializer):
    after = serializers.IntegerField(
        min_value=0, max_value=2**31 - 1, required=False, default=0, help_text="Only events with a larger seq"
    )


class RunListQuerySerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=AgentRun._meta.get_field("status").choices, required=False)
    agent = serializers.CharField(max_length=50, required=False, help_text="An agent's slug")
