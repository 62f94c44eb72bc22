"""Model providers, agents (draft + immutable published versions), their tools and sub-agents, MCP servers,
and runs with their recorded steps. Everything here lives in the tenant's own schema."""

import uuid

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from encrypted_fields.fields import EncryptedCharField

from agents.validators import validate_agent_slug, validate_base_url, validate_headers


class ProviderKind(models.TextChoices):
    CHAT = "chat", "Chat"
    EMBEDDING = "embedding", "Embedding"
    RERANK = "rerank", "Rerank"


class ConnectionStatus(models.TextChoices):
    UNKNOWN = "unknown", "Not tested"
    AVAILABLE = "available", "Available"
    UNAVAILABLE = "unavailable", "Unavailable"


class ModelProvider(models.Model):
    """An OpenAI-compatible model endpoint. The API key is encrypted at rest and never shown in full."""

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=ProviderKind.choices, default=ProviderKind.CHAT)
    base_url = models.CharField(
        max_length=500, validators=[validate_base_url], help_text="e.g. https://api.openai.com/v1"
    )
    model_name = models.CharField(max_length=200)
    api_key = EncryptedCharField(max_length=500, blank=True, null=True, default="")
    api_key_hint = models.CharField(max_length=16, blank=True, editable=False)
    timeout_s = models.FloatField(default=60, validators=[MinValueValidator(1), MaxValueValidator(600)])
    max_concurrency = models.PositiveIntegerField(default=4, validators=[MinValueValidator(1)])
    context_window = models.PositiveIntegerField(default=8192, validators=[MinValueValidator(256)])
    extra_headers = models.JSONField(default=dict, blank=True, validators=[validate_headers])
    tool_choice = models.CharField(
        max_length=16,
        choices=[("required", "required"), ("auto", "auto")],
        default="required",
        help_text="How tools-mode agents ask for tool calls; small local servers (llama.cpp) need “auto”.",
    )
    stream_tool_calls = models.BooleanField(
        default=True, help_text="Stream tools-mode answers; turn off for servers that cannot (llama.cpp)."
    )
    dimension = models.PositiveIntegerField(null=True, blank=True, help_text="Embedding size, from the test")
    embedding_input_type = models.BooleanField(
        default=False,
        help_text="Send input_type (query or passage) with embedding requests: E5-, Jina- and Voyage-style models "
        "embed questions and documents differently.",
    )
    is_default = models.BooleanField(default=False, help_text="The tenant's default provider of this kind")
    is_builtin = models.BooleanField(default=False, editable=False, help_text="A bundled local model")
    status = models.CharField(max_length=16, choices=ConnectionStatus.choices, default=ConnectionStatus.UNKNOWN)
    status_error = models.TextField(blank=True)
    status_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "name"]
        constraints = [
            models.UniqueConstraint(fields=["kind"], condition=Q(is_default=True), name="one_default_provider_per_kind")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind}: {self.model_name})"

    @property
    def masked_key(self) -> str:
        return f"…{self.api_key_hint}" if self.api_key_hint else ""


class McpServer(models.Model):
    """A remote MCP server whose tools agents may use. The token is encrypted at rest."""

    class Transport(models.TextChoices):
        STREAMABLE_HTTP = "streamable-http", "Streamable HTTP"
        SSE = "sse", "Server-sent events"

    name = models.CharField(max_length=100, unique=True)
    url = models.CharField(max_length=500, validators=[validate_base_url])
    transport = models.CharField(max_length=20, choices=Transport.choices, default=Transport.STREAMABLE_HTTP)
    headers = models.JSONField(default=dict, blank=True, validators=[validate_headers])
    token = EncryptedCharField(max_length=1000, blank=True, null=True, default="", help_text="Sent as a Bearer token")
    token_hint = models.CharField(max_length=16, blank=True, editable=False)
    tools = models.JSONField(default=list, blank=True, editable=False, help_text="Discovered tools (cached)")
    tools_discovered_at = models.DateTimeField(null=True, blank=True, editable=False)
    status = models.CharField(max_length=16, choices=ConnectionStatus.choices, default=ConnectionStatus.UNKNOWN)
    status_error = models.TextField(blank=True)
    status_checked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "MCP server"

    def __str__(self) -> str:
        return self.name


class AgentMode(models.TextChoices):
    CHAT = "chat", "Chat (one model call with retrieved context, streamed)"
    TOOLS = "tools", "Tools (tool-calling agent)"


class Agent(models.Model):
    """The editable draft of an agent. Runs use its published version, an immutable snapshot."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=50, unique=True, validators=[validate_agent_slug])
    description = models.TextField(blank=True, help_text="Also tells a parent agent when to call this one")
    role_prompt = models.TextField("role and duty", blank=True)
    constraints_prompt = models.TextField("constraints", blank=True)
    few_shot_examples = models.TextField(blank=True, help_text="Example exchanges shown to the model")
    greeting = models.TextField(blank=True)
    example_questions = models.JSONField(default=list, blank=True)
    chat_provider = models.ForeignKey(
        ModelProvider,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        limit_choices_to={"kind": ProviderKind.CHAT},
        related_name="agents",
        help_text="Empty: the tenant's default chat provider",
    )
    mode = models.CharField(max_length=8, choices=AgentMode.choices, default=AgentMode.TOOLS)
    temperature = models.FloatField(default=0.3, validators=[MinValueValidator(0), MaxValueValidator(2)])
    max_tokens = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(16), MaxValueValidator(65536)],
        help_text="Longest answer of each model call, in tokens (API callers may ask for less, not more). "
        "Empty: the model's own limit",
    )
    max_steps = models.PositiveIntegerField(default=6, validators=[MinValueValidator(1), MaxValueValidator(50)])
    run_timeout_s = models.PositiveIntegerField(default=180, validators=[MinValueValidator(5), MaxValueValidator(3600)])
    published_version = models.ForeignKey(
        "AgentVersion", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", editable=False
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class AgentTool(models.Model):
    """A tool enabled on an agent: a built-in tool, or one tool of an MCP server. Config is checked
    against the tool's JSON schema."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="tools")
    tool = models.CharField(max_length=64, help_text="Built-in tool name, or 'mcp' for a tool of an MCP server")
    mcp_server = models.ForeignKey(McpServer, null=True, blank=True, on_delete=models.PROTECT, related_name="uses")
    mcp_tool_name = models.CharField(max_length=200, blank=True)
    config = models.JSONField(default=dict, blank=True)
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["agent", "tool", "mcp_server", "mcp_tool_name"], name="unique_agent_tool"),
            models.CheckConstraint(
                condition=(Q(tool="mcp") & Q(mcp_server__isnull=False)) | (~Q(tool="mcp") & Q(mcp_server__isnull=True)),
                name="mcp_tool_has_server",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tool}:{self.mcp_tool_name}" if self.tool == "mcp" else self.tool


class SubAgentLink(models.Model):
    """`parent` may delegate to `child` (a smolagents managed agent). Cycles are refused."""

    parent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="sub_agent_links")
    child = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="parent_links")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["parent", "child"], name="unique_sub_agent"),
            models.CheckConstraint(condition=~Q(parent=models.F("child")), name="sub_agent_not_self"),
        ]

    def __str__(self) -> str:
        return f"{self.parent} → {self.child}"


class AgentVersion(models.Model):
    """An immutable snapshot of an agent (with its tools and its sub-agents' published specs)."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    spec = models.JSONField(editable=False)
    note = models.CharField(max_length=200, blank=True)
    created_by = models.CharField(max_length=254, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["agent", "-number"]
        constraints = [models.UniqueConstraint(fields=["agent", "number"], name="unique_agent_version")]

    def __str__(self) -> str:
        return f"{self.agent.slug} v{self.number}"


class RunStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    TIMED_OUT = "timed_out", "Timed out"


TERMINAL_STATUSES = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.TIMED_OUT)


class AgentRun(models.Model):
    class Trigger(models.TextChoices):
        CHAT = "chat", "Chat"
        API = "api", "API"
        SCHEDULE = "schedule", "Schedule"
        PLAYGROUND = "playground", "Playground"
        CLI = "cli", "Command line"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="runs")
    version = models.ForeignKey(AgentVersion, null=True, blank=True, on_delete=models.RESTRICT, related_name="runs")
    spec = models.JSONField(editable=False, help_text="The spec that ran (a version's, or a draft's)")
    trigger = models.CharField(max_length=16, choices=Trigger.choices)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED, db_index=True)
    input = models.JSONField(default=list, help_text="Messages given to the agent")
    output = models.TextField(blank=True)
    error = models.TextField(blank=True)
    user_email = models.CharField(max_length=254, blank=True)
    api_key = models.ForeignKey(
        "api.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs", editable=False
    )
    end_user = models.CharField(
        max_length=200, blank=True, help_text="The caller's own user id (OpenAI's `user` field), as given"
    )
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    usage_estimated = models.BooleanField(
        default=False,
        help_text="The provider reported no token usage for some model call (llama.cpp's server, an answer stopped "
        "midway): its tokens are estimated from the text.",
    )
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    last_seq = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    deadline_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "deadline_at"])]

    def __str__(self) -> str:
        return f"{self.agent.slug} run {str(self.id)[:8]}"

    @property
    def is_finished(self) -> bool:
        return self.status in TERMINAL_STATUSES


class RunStep(models.Model):
    """One recorded event of a run (text deltas are folded into the run's output, not stored one by one)."""

    run = models.ForeignKey(AgentRun, on_delete=models.CASCADE, related_name="steps")
    seq = models.PositiveIntegerField()
    type = models.CharField(max_length=32)
    agent_path = models.CharField(max_length=300, blank=True, help_text="Sub-agent path, empty for the run's agent")
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="unique_run_step_seq")]

    def __str__(self) -> str:
        return f"#{self.seq} {self.type}"


class UsageRecord(models.Model):
    """The tokens one finished run used, by agent, user and API key. Kept when the run, agent or key is
    deleted, so monthly usage and quotas stay true."""

    run = models.OneToOneField(AgentRun, null=True, on_delete=models.SET_NULL, related_name="usage")
    agent = models.ForeignKey(Agent, null=True, on_delete=models.SET_NULL, related_name="usage_records")
    agent_slug = models.CharField(max_length=50)
    user_email = models.CharField(max_length=254, blank=True)
    api_key = models.ForeignKey(
        "api.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    trigger = models.CharField(max_length=16, choices=AgentRun.Trigger.choices)
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    estimated = models.BooleanField(
        default=False, help_text="The run's tokens are estimated (AgentRun.usage_estimated)"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["api_key", "created_at"])]

    def __str__(self) -> str:
        return f"{self.agent_slug}: {self.tokens_in + self.tokens_out} tokens"

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out
