import json
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from agents.forms import (
    AgentImportForm,
    AgentToolForm,
    McpServerForm,
    ModelProviderForm,
    PlaygroundForm,
    RollbackForm,
    SubAgentLinkForm,
)
from agents.models import Agent, AgentRun, AgentTool, AgentVersion, McpServer, ModelProvider, RunStep, SubAgentLink
from agents.services.agents import agent_export, agent_import, agent_mode_unused, agent_publish, agent_rollback
from agents.services.mcp import mcp_server_discover
from agents.services.providers import key_hint, provider_save, provider_test
from agents.services.runs import run_cancel, run_start
from nexent_site.admin_sites import tenant_admin_site
from nexent_site.errors import ApplicationError

STATUS_COLOURS = {
    "available": "#2e7d32",
    "unavailable": "#c62828",
    "unknown": "#6b7280",
    "succeeded": "#2e7d32",
    "failed": "#c62828",
    "timed_out": "#c62828",
    "cancelled": "#b45309",
    "running": "#1d4ed8",
    "queued": "#6b7280",
}


def badge(value: str, label: str) -> str:
    return format_html('<strong style="color:{}">{}</strong>', STATUS_COLOURS.get(value, "#111"), label)


@admin.register(ModelProvider, site=tenant_admin_site)
class ModelProviderAdmin(admin.ModelAdmin):
    form = ModelProviderForm
    list_display = [
        "name",
        "kind",
        "model_name",
        "status_badge",
        "is_default",
        "key",
    ]
    list_filter = ["kind", "status", "is_default"]
    search_fields = ["name", "model_name", "base_url"]
    readonly_fields = ["key", "status_badge", "status_error", "status_checked_at", "dimension", "is_builtin"]
    actions = ["test_selected", "make_default"]
    fieldsets = [
        (None, {"fields": ["name", "kind", "base_url", "model_name"]}),
        ("Credentials", {"fields": ["key", "new_api_key", "clear_api_key", "extra_headers"]}),
        (
            "Limits and behaviour",
            {
                "fields": [
                    "timeout_s",
                    "max_concurrency",
                    "context_window",
                    "tool_choice",
                    "stream_tool_calls",
                    "embedding_input_type",
                ]
            },
        ),
        (
            "Status",
            {
                "fields": [
                    "is_default",
                    "status_badge",
                    "status_error",
                    "status_checked_at",
                    "dimension",
                    "skip_test",
                    "is_builtin",
                ]
            },
        ),
    ]

    @admin.display(description="API key")
    def key(self, obj: ModelProvider) -> str:
        return obj.masked_key or ("set" if obj.api_key else "—")

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: ModelProvider) -> str:
        return badge(obj.status, obj.get_status_display())

    def save_model(self, request: HttpRequest, obj: ModelProvider, form: Any, change: bool) -> None:
        facts = getattr(form, "probe_facts", None)
        if facts is not None:
            obj.status, obj.status_error, obj.status_checked_at = "available", "", timezone.now()
            obj.dimension = facts.get("dimension", obj.dimension)
        provider_save(provider=obj, api_key=form.secret_value())

    @admin.action(description="Test connectivity (a real model call)")
    def test_selected(self, request: HttpRequest, queryset: QuerySet[ModelProvider]) -> None:
        for provider in queryset:
            provider_test(provider=provider)
            if provider.status == "available":
                extra = f", {provider.dimension} dimensions" if provider.kind == "embedding" else ""
                self.message_user(request, f"{provider.name}: available{extra}.", messages.SUCCESS)
            else:
                self.message_user(request, f"{provider.name}: unavailable — {provider.status_error}", messages.ERROR)

    @admin.action(description="Make the default of its kind")
    def make_default(self, request: HttpRequest, queryset: QuerySet[ModelProvider]) -> None:
        for provider in queryset:
            provider.is_default = True
            provider_save(provider=provider)
        self.message_user(request, "Defaults updated.", messages.SUCCESS)


@admin.register(McpServer, site=tenant_admin_site)
class McpServerAdmin(admin.ModelAdmin):
    form = McpServerForm
    list_display = ["name", "url", "transport", "status_badge", "tool_count", "tools_discovered_at"]
    list_filter = ["transport", "status"]
    readonly_fields = [
        "token_state",
        "status_badge",
        "status_error",
        "status_checked_at",
        "tool_list",
        "tools_discovered_at",
    ]
    fields = [
        "name",
        "url",
        "transport",
        "headers",
        "token_state",
        "new_token",
        "clear_token",
        "status_badge",
        "status_error",
        "status_checked_at",
        "tool_list",
        "tools_discovered_at",
    ]
    actions = ["discover_selected"]

    @admin.display(description="Token")
    def token_state(self, obj: McpServer) -> str:
        return f"…{obj.token_hint}" if obj.token_hint else ("set" if obj.token else "—")

    @admin.display(description="Status")
    def status_badge(self, obj: McpServer) -> str:
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="Tools")
    def tool_count(self, obj: McpServer) -> int:
        return len(obj.tools or [])

    @admin.display(description="Discovered tools")
    def tool_list(self, obj: McpServer) -> str:
        return format_html_join(
            "", "<div><code>{}</code> — {}</div>", ((t["name"], t["description"]) for t in obj.tools)
        )

    def save_model(self, request: HttpRequest, obj: McpServer, form: Any, change: bool) -> None:
        secret = form.secret_value()
        if secret is not None:
            obj.token, obj.token_hint = secret, key_hint(secret)
        obj.save()
        if not change:
            mcp_server_discover(server=obj)

    @admin.action(description="Test connection and discover tools")
    def discover_selected(self, request: HttpRequest, queryset: QuerySet[McpServer]) -> None:
        for server in queryset:
            mcp_server_discover(server=server)
            if server.status == "available":
                self.message_user(request, f"{server.name}: {len(server.tools)} tools.", messages.SUCCESS)
            else:
                self.message_user(request, f"{server.name}: unavailable — {server.status_error}", messages.ERROR)


class AgentToolInline(admin.TabularInline):
    model = AgentTool
    form = AgentToolForm
    extra = 0
    fields = ["tool", "mcp_server", "mcp_tool_name", "config", "enabled"]


class SubAgentInline(admin.TabularInline):
    model = SubAgentLink
    form = SubAgentLinkForm
    fk_name = "parent"
    extra = 0
    verbose_name = "sub-agent"
    verbose_name_plural = "sub-agents (this agent may delegate to them)"


class AgentVersionInline(admin.TabularInline):
    model = AgentVersion
    extra = 0
    fields = ["number", "note", "created_by", "created_at", "is_published"]
    readonly_fields = fields
    can_delete = False
    ordering = ["-number"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="published", boolean=True)
    def is_published(self, obj: AgentVersion) -> bool:
        return obj.agent.published_version_id == obj.pk


@admin.register(Agent, site=tenant_admin_site)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "mode", "chat_provider", "published", "updated_at", "playground_link"]
    list_filter = ["mode"]
    search_fields = ["name", "slug", "description"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [AgentToolInline, SubAgentInline, AgentVersionInline]
    actions = ["publish_selected", "export_selected"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "description", "mode", "chat_provider"]}),
        ("Instructions", {"fields": ["role_prompt", "constraints_prompt", "few_shot_examples"]}),
        ("Chat page", {"fields": ["greeting", "example_questions"]}),
        ("Limits", {"fields": ["temperature", "max_tokens", "max_steps", "run_timeout_s"]}),
    ]
    change_list_template = "admin/agents/agent/change_list.html"

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)  # the tools and sub-agents are saved by now
        for warning in agent_mode_unused(form.instance):
            self.message_user(request, warning, messages.WARNING)

    @admin.display(description="Published")
    def published(self, obj: Agent) -> str:
        return f"v{obj.published_version.number}" if obj.published_version else "—"

    @admin.display(description="")
    def playground_link(self, obj: Agent) -> str:
        return format_html('<a href="{}">Playground</a>', reverse("admin:agents_agent_playground", args=[obj.pk]))

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return super().get_queryset(request).select_related("published_version", "chat_provider")

    def get_urls(self) -> list:
        wrap = self.admin_site.admin_view
        return [
            path("import/", wrap(self.import_view), name="agents_agent_import"),
            path("<int:pk>/playground/", wrap(self.playground_view), name="agents_agent_playground"),
            path("<int:pk>/rollback/", wrap(self.rollback_view), name="agents_agent_rollback"),
            *super().get_urls(),
        ]

    @admin.action(description="Publish the draft as a new version")
    def publish_selected(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        for agent in queryset:
            try:
                version = agent_publish(agent=agent, user_email=request.user.email)
                self.message_user(request, f"{agent.slug}: published v{version.number}.", messages.SUCCESS)
            except ValidationError as exc:
                self.message_user(request, f"{agent.slug}: {' '.join(exc.messages)}", messages.ERROR)

    @admin.action(description="Export as JSON")
    def export_selected(self, request: HttpRequest, queryset: QuerySet[Agent]) -> HttpResponse:
        exports = [agent_export(agent) for agent in queryset]
        body = exports[0] if len(exports) == 1 else exports
        name = f"{queryset[0].slug}.json" if len(exports) == 1 else "agents.json"
        response = HttpResponse(json.dumps(body, indent=2, ensure_ascii=False), content_type="application/json")
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    def import_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            return HttpResponse(status=403)
        form = AgentImportForm(request.POST or None, request.FILES or None)
        errors: dict[str, list[str]] = {}
        if request.method == "POST" and form.is_valid():
            upload = form.cleaned_data["file"]
            try:
                if upload.size > 2_000_000:
                    raise ValidationError({"file": ["The file is larger than 2 MB."]})
                try:
                    data = json.loads(upload.read().decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    raise ValidationError({"file": ["The file is not valid JSON."]}) from None
                agent = agent_import(data=data, slug=form.cleaned_data.get("slug") or None)
            except ValidationError as exc:
                errors = exc.message_dict
            else:
                self.message_user(request, f"Imported {agent.slug} as a draft; publish it to use it.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:agents_agent_change", args=[agent.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": "Import an agent",
            "form": form,
            "import_errors": errors,
            "opts": self.model._meta,
        }
        return render(request, "admin/agents/agent/import.html", context, status=400 if errors else 200)

    def rollback_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        agent = get_object_or_404(Agent, pk=pk)
        if not self.has_change_permission(request, agent):
            return HttpResponse(status=403)
        form = RollbackForm(request.POST or None, agent=agent)
        if request.method == "POST" and form.is_valid():
            version = agent_rollback(agent=agent, version=form.cleaned_data["version"])
            self.message_user(request, f"{agent.slug}: v{version.number} is published again.", messages.SUCCESS)
            return HttpResponseRedirect(reverse("admin:agents_agent_change", args=[agent.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Roll back {agent.name}",
            "form": form,
            "agent": agent,
            "opts": self.model._meta,
        }
        return render(request, "admin/agents/agent/rollback.html", context)

    def playground_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """Runs the *draft* through a real worker and shows its events live (websocket /ws/runs/<id>/)."""
        agent = get_object_or_404(Agent, pk=pk)
        if not self.has_change_permission(request, agent):
            return HttpResponse(status=403)
        form = PlaygroundForm(request.POST or None)
        if request.method == "POST":
            if not form.is_valid():
                return JsonResponse({"errors": form.errors.get_json_data()}, status=400)
            try:
                run = run_start(
                    agent=agent,
                    messages=form.cleaned_data["message"],
                    trigger=AgentRun.Trigger.PLAYGROUND,
                    user_email=request.user.email,
                    draft=True,
                )
            except ValidationError as exc:
                return JsonResponse(
                    {"errors": exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}},
                    status=400,
                )
            except ApplicationError as exc:
                return JsonResponse({"errors": {"__all__": [exc.message]}}, status=exc.status)
            return JsonResponse(
                {
                    "run_id": str(run.id),
                    "ws": f"/ws/runs/{run.id}/",
                    "run_url": reverse("admin:agents_agentrun_change", args=[run.pk]),
                },
                status=201,
            )
        context = {
            **self.admin_site.each_context(request),
            "title": f"Playground: {agent.name}",
            "form": form,
            "agent": agent,
            "opts": self.model._meta,
        }
        return render(request, "admin/agents/agent/playground.html", context)


class RunStepInline(admin.TabularInline):
    model = RunStep
    extra = 0
    can_delete = False
    fields = ["seq", "type", "agent_path", "pretty_data", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="data")
    def pretty_data(self, obj: RunStep) -> str:
        return format_html(
            "<pre style='white-space:pre-wrap;margin:0'>{}</pre>",
            json.dumps(obj.data, indent=1, ensure_ascii=False)[:4000],
        )


@admin.register(AgentRun, site=tenant_admin_site)
class AgentRunAdmin(admin.ModelAdmin):
    """Read-only trace of every run."""

    list_display = [
        "short_id",
        "agent",
        "status_badge",
        "trigger",
        "user_email",
        "tokens",
        "ttft_ms",
        "duration_ms",
        "created_at",
    ]
    list_filter = [
        "status",
        "trigger",
        "agent",
        "api_key",
        "usage_estimated",
        ("created_at", admin.DateFieldListFilter),
    ]
    search_fields = ["id", "user_email", "end_user", "output", "error"]
    date_hierarchy = "created_at"
    inlines = [RunStepInline]
    actions = ["cancel_selected"]
    readonly_fields = [
        "id",
        "agent",
        "version",
        "trigger",
        "status_badge",
        "user_email",
        "api_key",
        "end_user",
        "input_pretty",
        "output",
        "error",
        "tokens_in",
        "tokens_out",
        "usage_estimated",
        "ttft_ms",
        "duration_ms",
        "created_at",
        "started_at",
        "finished_at",
        "deadline_at",
    ]
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet[AgentRun]:
        return super().get_queryset(request).select_related("agent", "version")

    @admin.display(description="Run", ordering="created_at")
    def short_id(self, obj: AgentRun) -> str:
        return str(obj.id)[:8]

    @admin.display(description="Status", ordering="status")
    def status_badge(self, obj: AgentRun) -> str:
        return badge(obj.status, obj.get_status_display())

    @admin.display(description="Tokens in / out", ordering="tokens_out")
    def tokens(self, obj: AgentRun) -> str:
        # "≈": the provider reported no usage for some call of the run, so the figures are estimated
        return f"{'≈ ' if obj.usage_estimated else ''}{obj.tokens_in:,} / {obj.tokens_out:,}"

    @admin.display(description="Input")
    def input_pretty(self, obj: AgentRun) -> str:
        return format_html_join("", "<div><b>{}</b>: {}</div>", ((m["role"], m["content"]) for m in obj.input))

    @admin.action(description="Cancel selected runs")
    def cancel_selected(self, request: HttpRequest, queryset: QuerySet[AgentRun]) -> None:
        running = [run for run in queryset if not run.is_finished]
        for run in running:
            run_cancel(run=run)
        self.message_user(request, f"Asked {len(running)} run(s) to stop.", messages.SUCCESS)
