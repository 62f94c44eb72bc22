from typing import Any

from django import forms
from django.core.exceptions import ValidationError

from agents.models import Agent, AgentTool, McpServer, ModelProvider, SubAgentLink
from agents.services.agents import agent_tool_validate, subagent_link_validate
from agents.tools.registry import TOOLS, tool_definition
from nexent_site.integrations.openai_compat import ProviderConfig, ProviderError, provider_probe


def secret_input(label: str, help_text: str) -> forms.CharField:
    """A password-style field that never renders the stored value back."""
    return forms.CharField(
        label=label,
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=help_text,
    )


class _SecretFieldMixin:
    """A write-only secret: never rendered back; empty keeps the stored value; a checkbox removes it."""

    secret_field = ""

    def secret_value(self) -> str | None:
        data = self.cleaned_data  # type: ignore[attr-defined]
        if data.get(f"clear_{self.secret_field}"):
            return ""
        return data.get(f"new_{self.secret_field}") or None


class ModelProviderForm(_SecretFieldMixin, forms.ModelForm):
    secret_field = "api_key"
    new_api_key = secret_input(
        "API key", "Stored encrypted and never shown again. Leave empty to keep the current key."
    )
    clear_api_key = forms.BooleanField(label="Remove the stored key", required=False)
    skip_test = forms.BooleanField(
        label="Save without a connectivity test",
        required=False,
        help_text="A new provider is tested with a real call before it is saved.",
    )

    class Meta:
        model = ModelProvider
        fields = [
            "name",
            "kind",
            "base_url",
            "model_name",
            "timeout_s",
            "max_concurrency",
            "context_window",
            "extra_headers",
            "tool_choice",
            "stream_tool_calls",
            "embedding_input_type",
            "is_default",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if self.instance.pk is None and not data.get("skip_test") and not self.errors:
            config = ProviderConfig(
                kind=data["kind"],
                base_url=data["base_url"],
                model=data["model_name"],
                api_key=self.secret_value() or "",
                timeout_s=data["timeout_s"],
                headers=data.get("extra_headers") or {},
            )
            try:
                self.probe_facts = provider_probe(config)
            except ProviderError as exc:
                raise ValidationError(
                    f"Connectivity test failed: {exc.message}. Fix the settings, or tick “Save without a "
                    "connectivity test”."
                ) from None
        return data


class McpServerForm(_SecretFieldMixin, forms.ModelForm):
    secret_field = "token"
    new_token = secret_input(
        "Token", "Sent as “Authorization: Bearer …”. Stored encrypted; leave empty to keep the current one."
    )
    clear_token = forms.BooleanField(label="Remove the stored token", required=False)

    class Meta:
        model = McpServer
        fields = ["name", "url", "transport", "headers"]


def tool_choices() -> list[tuple[str, str]]:
    tool_definition("datetime")  # makes sure the built-in tools are registered
    return [(key, f"{d.label} ({key})") for key, d in sorted(TOOLS.items())] + [("mcp", "A tool of an MCP server")]


class AgentToolForm(forms.ModelForm):
    tool = forms.ChoiceField(choices=tool_choices)

    class Meta:
        model = AgentTool
        fields = ["tool", "mcp_server", "mcp_tool_name", "config", "enabled"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        agent = self.instance.agent if self.instance.agent_id else None
        if data.get("tool") and not self.errors:
            try:
                data["config"] = agent_tool_validate(
                    agent=agent,
                    tool=data["tool"],
                    config=data.get("config") or {},
                    mcp_server=data.get("mcp_server"),
                    mcp_tool_name=data.get("mcp_tool_name", ""),
                )
            except ValidationError as exc:
                for field, messages in exc.message_dict.items():
                    self.add_error(field if field in self.fields else None, messages)
        return data


class SubAgentLinkForm(forms.ModelForm):
    class Meta:
        model = SubAgentLink
        fields = ["child"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        parent = self.instance.parent if self.instance.parent_id else None
        if parent is not None and data.get("child") is not None:
            try:
                subagent_link_validate(parent=parent, child=data["child"])
            except ValidationError as exc:
                self.add_error("child", exc.message_dict.get("child", exc.messages))
        return data


class AgentImportForm(forms.Form):
    file = forms.FileField(help_text="A JSON file exported from Nexent (Export action).")
    slug = forms.SlugField(required=False, help_text="Import under another slug (optional).")


class PlaygroundForm(forms.Form):
    message = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=20_000)


class RollbackForm(forms.Form):
    version = forms.ModelChoiceField(queryset=None)

    def __init__(self, *args: Any, agent: Agent, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["version"].queryset = agent.versions.all()
