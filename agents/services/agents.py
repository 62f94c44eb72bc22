"""Agents: tools and sub-agents (validated), publishing immutable versions, rollback, import and export."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from agents.models import Agent, AgentTool, AgentVersion, McpServer, ModelProvider, ProviderKind, SubAgentLink
from agents.tools import tool_config_validate
from agents.tools.knowledge import knowledge_bases_missing

EXPORT_FORMAT = "nexent.agent/1"


# --- tools ------------------------------------------------------------------------------------------------
def agent_tool_validate(
    *, agent: Agent, tool: str, config: Any, mcp_server: McpServer | None = None, mcp_tool_name: str = ""
) -> dict:
    """Field-keyed errors for a tool on an agent; returns the config with defaults filled in."""
    if tool == "mcp":
        if mcp_server is None:
            raise ValidationError({"mcp_server": ["Choose the MCP server that provides this tool."]})
        known = {t["name"] for t in mcp_server.tools or []}
        if mcp_tool_name not in known:
            hint = (
                f" Known tools: {', '.join(sorted(known))}." if known else " Run “Discover tools” on the server first."
            )
            raise ValidationError({"mcp_tool_name": [f"{mcp_server.name} has no tool {mcp_tool_name!r}.{hint}"]})
        if not isinstance(config, dict):
            raise ValidationError({"config": ["Tool settings must be a JSON object."]})
        return config
    if mcp_server is not None:
        raise ValidationError({"mcp_server": ["Only MCP tools take a server."]})
    config = tool_config_validate(tool, config)
    if tool == "knowledge_search":
        _knowledge_bases_check(config.get("knowledge_bases", []), field="config")
    return config


def _knowledge_bases_check(slugs: list[str], *, field: str) -> None:
    missing = knowledge_bases_missing(slugs)
    if missing:
        names = ", ".join(f"“{slug}”" for slug in missing)
        raise ValidationError({field: [f"No knowledge base {names} in this organisation."]})


def agent_tool_add(
    *, agent: Agent, tool: str, config: Any = None, mcp_server: McpServer | None = None, mcp_tool_name: str = ""
) -> AgentTool:
    config = agent_tool_validate(
        agent=agent,
        tool=tool,
        config={} if config is None else config,
        mcp_server=mcp_server,
        mcp_tool_name=mcp_tool_name,
    )
    return AgentTool.objects.create(
        agent=agent, tool=tool, config=config, mcp_server=mcp_server, mcp_tool_name=mcp_tool_name
    )


def agent_tools_set(*, agent: Agent, tools: list[dict]) -> list[AgentTool]:
    """Replace the agent's tools with `tools` (dicts of tool, config, mcp_server, mcp_tool_name, enabled).
    Errors are keyed `tools[<index>].<field>`; call inside a transaction, nothing is kept on error."""
    errors: dict[str, list[str]] = {}
    rows = []
    for index, spec in enumerate(tools):
        try:
            config = agent_tool_validate(
                agent=agent,
                tool=spec.get("tool", ""),
                config={} if spec.get("config") is None else spec["config"],
                mcp_server=spec.get("mcp_server"),
                mcp_tool_name=spec.get("mcp_tool_name", ""),
            )
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors.setdefault(f"tools[{index}].{field}", []).extend(messages)
            continue
        rows.append(
            AgentTool(
                agent=agent,
                tool=spec["tool"],
                config=config,
                mcp_server=spec.get("mcp_server"),
                mcp_tool_name=spec.get("mcp_tool_name", ""),
                enabled=spec.get("enabled", True),
            )
        )
    keys = [(row.tool, row.mcp_server_id, row.mcp_tool_name) for row in rows]
    if not errors and len(set(keys)) != len(keys):
        errors["tools"] = ["Each tool can be enabled once per agent."]
    if errors:
        raise ValidationError(errors)
    agent.tools.all().delete()
    return AgentTool.objects.bulk_create(rows)


def agent_sub_agents_set(*, agent: Agent, slugs: list[str]) -> None:
    """Make exactly the agents `slugs` this agent's sub-agents (cycles and unknown slugs refused, under
    `sub_agents`)."""
    children = {child.slug: child for child in Agent.objects.filter(slug__in=slugs)}
    missing = [slug for slug in dict.fromkeys(slugs) if slug not in children]
    if missing:
        raise ValidationError({"sub_agents": [f"No agent “{slug}” in this organisation." for slug in missing]})
    agent.sub_agent_links.exclude(child__slug__in=slugs).delete()
    linked = set(agent.sub_agent_links.values_list("child__slug", flat=True))
    for slug in dict.fromkeys(slugs):
        if slug in linked:
            continue
        try:
            subagent_link_add(parent=agent, child=children[slug])
        except ValidationError as exc:
            raise ValidationError({"sub_agents": exc.message_dict.get("child", exc.messages)}) from None


# --- sub-agents ---------------------------------------------------------------------------------------------
def _descendants(agent_id: int) -> dict[int, list[int]]:
    """Map of every agent reachable from `agent_id` to the path leading to it."""
    links: dict[int, list[int]] = {}
    for parent_id, child_id in SubAgentLink.objects.values_list("parent_id", "child_id"):
        links.setdefault(parent_id, []).append(child_id)
    paths: dict[int, list[int]] = {}
    stack = [(agent_id, [agent_id])]
    while stack:
        current, path = stack.pop()
        for child in links.get(current, []):
            if child not in paths:
                paths[child] = [*path, child]
                stack.append((child, [*path, child]))
    return paths


def subagent_link_validate(*, parent: Agent, child: Agent) -> None:
    if parent.pk == child.pk:
        raise ValidationError({"child": ["An agent cannot manage itself."]})
    paths = _descendants(child.pk)
    if parent.pk in paths:
        names = dict(Agent.objects.filter(pk__in=paths[parent.pk]).values_list("pk", "slug"))
        cycle = " → ".join([parent.slug, *(names[pk] for pk in paths[parent.pk])])
        raise ValidationError({"child": [f"This would create a cycle: {cycle}."]})


def subagent_link_add(*, parent: Agent, child: Agent) -> SubAgentLink:
    subagent_link_validate(parent=parent, child=child)
    return SubAgentLink.objects.create(parent=parent, child=child)


# --- specs and versions -------------------------------------------------------------------------------------
def agent_spec_build(agent: Agent) -> dict:
    """The runnable description of the agent's draft. Sub-agents are included as their *published* specs,
    so a version never changes when a sub-agent is edited later."""
    tools = []
    for tool in agent.tools.filter(enabled=True).select_related("mcp_server"):
        if tool.tool == "mcp":
            tools.append(
                {
                    "tool": "mcp",
                    "server_id": tool.mcp_server_id,
                    "server": tool.mcp_server.name,
                    "name": tool.mcp_tool_name,
                }
            )
        else:
            tools.append({"tool": tool.tool, "config": tool.config})
    sub_agents = []
    for link in agent.sub_agent_links.select_related("child__published_version"):
        child = link.child
        if child.published_version is None:
            raise ValidationError(f"Sub-agent “{child.slug}” has no published version; publish it first.")
        sub_agents.append(child.published_version.spec)
    provider = agent.chat_provider
    return {
        "slug": agent.slug,
        "name": agent.name,
        "description": agent.description,
        "mode": agent.mode,
        "instructions": {
            "role": agent.role_prompt,
            "constraints": agent.constraints_prompt,
            "examples": agent.few_shot_examples,
        },
        "greeting": agent.greeting,
        "example_questions": agent.example_questions,
        "provider_id": provider.pk if provider else None,
        "context_window": provider.context_window if provider else None,
        "temperature": agent.temperature,
        "max_tokens": agent.max_tokens,
        "max_steps": agent.max_steps,
        "run_timeout_s": agent.run_timeout_s,
        "tools": tools,
        "sub_agents": sub_agents,
    }


def agent_mode_unused(agent: Agent) -> list[str]:
    """What of the agent's draft its mode will not use, for the people who set it up: a chat-mode agent answers in
    one model call with its knowledge searches run first, so its other tools and its sub-agents are kept but
    unused until it is switched to tools mode."""
    if agent.mode != "chat" or agent.pk is None:
        return []
    unused = []
    # `.all()`: prefetched where agents are listed
    tools = sorted({t.mcp_tool_name or t.tool for t in agent.tools.all() if t.enabled and t.tool != "knowledge_search"})
    if tools:
        unused.append(
            f"Chat mode uses only knowledge_search tools: {', '.join(tools)} will be used in tools mode only."
        )
    children = sorted(link.child.slug for link in agent.sub_agent_links.all())
    if children:
        unused.append(f"Chat mode does not delegate: the sub-agents {', '.join(children)} are used in tools mode only.")
    return unused


@transaction.atomic
def agent_publish(*, agent: Agent, note: str = "", user_email: str = "") -> AgentVersion:
    """Snapshot the draft as the next version and make it the published one. Refused (ValidationError on
    `tools`) while a knowledge_search tool names a knowledge base that no longer exists."""
    locked = Agent.objects.select_for_update().get(pk=agent.pk)  # numbers versions one publisher at a time
    for tool in locked.tools.filter(tool="knowledge_search", enabled=True):
        _knowledge_bases_check(tool.config.get("knowledge_bases", []), field="tools")
    spec = agent_spec_build(locked)
    last = locked.versions.order_by("-number").values_list("number", flat=True).first() or 0
    version = AgentVersion.objects.create(agent=locked, number=last + 1, spec=spec, note=note, created_by=user_email)
    locked.published_version = version
    locked.save(update_fields=["published_version", "updated_at"])
    agent.published_version = version
    return version


def agent_rollback(*, agent: Agent, version: AgentVersion) -> AgentVersion:
    """Publish an earlier version again (versions never change)."""
    if version.agent_id != agent.pk:
        raise ValidationError({"version": ["That version belongs to another agent."]})
    agent.published_version = version
    agent.save(update_fields=["published_version", "updated_at"])
    return version


# --- import / export ----------------------------------------------------------------------------------------
AGENT_FIELDS = (
    "name",
    "description",
    "role_prompt",
    "constraints_prompt",
    "few_shot_examples",
    "greeting",
    "example_questions",
    "mode",
    "temperature",
    "max_tokens",
    "max_steps",
    "run_timeout_s",
)


EDITABLE_FIELDS = (*AGENT_FIELDS, "chat_provider")


def _agent_clean(agent: Agent) -> None:
    try:
        agent.full_clean()
    except ValidationError as exc:
        raise ValidationError(exc.message_dict) from None


@transaction.atomic
def agent_create(
    *, slug: str, fields: dict[str, Any], tools: list[dict] | None = None, sub_agents: list[str] | None = None
) -> Agent:
    """A new draft agent (unpublished) with its tools and sub-agents. `fields` are EDITABLE_FIELDS
    (`chat_provider` a ModelProvider or None). ValidationError keyed by field; nothing is saved on error."""
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"Not editable: {', '.join(sorted(unknown))}")
    agent = Agent(slug=slug, **fields)
    _agent_clean(agent)
    agent.save()
    agent_tools_set(agent=agent, tools=tools or [])
    agent_sub_agents_set(agent=agent, slugs=sub_agents or [])
    return agent


@transaction.atomic
def agent_update(
    *, agent: Agent, fields: dict[str, Any], tools: list[dict] | None = None, sub_agents: list[str] | None = None
) -> Agent:
    """Change the draft: the given fields, and when given, the whole list of tools or sub-agents. The
    published version is untouched until the next publish. ValidationError keyed by field; nothing is
    saved on error."""
    unknown = set(fields) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValueError(f"Not editable: {', '.join(sorted(unknown))}")
    agent = Agent.objects.select_for_update().get(pk=agent.pk)
    for name, value in fields.items():
        setattr(agent, name, value)
    _agent_clean(agent)
    agent.save()
    if tools is not None:
        agent_tools_set(agent=agent, tools=tools)
    if sub_agents is not None:
        agent_sub_agents_set(agent=agent, slugs=sub_agents)
    return agent


def agent_export(agent: Agent) -> dict:
    """JSON-ready description of the draft, its tools and sub-agents. Providers, MCP servers and
    sub-agents are referenced by name/slug, never by id, and no secret is included."""
    return {
        "format": EXPORT_FORMAT,
        "agent": {
            "slug": agent.slug,
            **{field: getattr(agent, field) for field in AGENT_FIELDS},
            "chat_provider": agent.chat_provider.name if agent.chat_provider else None,
        },
        "tools": [
            {
                "tool": t.tool,
                "config": t.config,
                "enabled": t.enabled,
                "mcp_server": t.mcp_server.name if t.mcp_server else None,
                "mcp_tool_name": t.mcp_tool_name,
            }
            for t in agent.tools.select_related("mcp_server")
        ],
        "sub_agents": list(agent.sub_agent_links.values_list("child__slug", flat=True)),
    }


@transaction.atomic
def agent_import(*, data: Any, slug: str | None = None) -> Agent:
    """Create an agent from `agent_export` output. Every missing reference is reported, by field."""
    if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT or not isinstance(data.get("agent"), dict):
        raise ValidationError({"file": [f"Not a Nexent agent export (expected format {EXPORT_FORMAT!r})."]})
    spec = data["agent"]
    errors: dict[str, list[str]] = {}
    slug = slug or spec.get("slug", "")
    if Agent.objects.filter(slug=slug).exists():
        errors.setdefault("slug", []).append(f"An agent “{slug}” already exists; import under another slug.")
    provider = None
    if spec.get("chat_provider"):
        provider = ModelProvider.objects.filter(name=spec["chat_provider"], kind=ProviderKind.CHAT).first()
        if provider is None:
            errors.setdefault("chat_provider", []).append(f"No chat provider named “{spec['chat_provider']}”.")
    children = []
    for child_slug in data.get("sub_agents", []):
        child = Agent.objects.filter(slug=child_slug).first()
        if child is None:
            errors.setdefault("sub_agents", []).append(f"No agent “{child_slug}” to use as a sub-agent.")
        children.append(child)
    servers = {}
    for index, tool in enumerate(data.get("tools", [])):
        if tool.get("mcp_server"):
            server = McpServer.objects.filter(name=tool["mcp_server"]).first()
            if server is None:
                errors.setdefault(f"tools[{index}]", []).append(f"No MCP server named “{tool['mcp_server']}”.")
            servers[index] = server
        if tool.get("tool") == "knowledge_search" and isinstance(tool.get("config"), dict):
            for slug_missing in knowledge_bases_missing(list(tool["config"].get("knowledge_bases") or [])):
                errors.setdefault(f"tools[{index}]", []).append(f"No knowledge base “{slug_missing}”.")
    if errors:
        raise ValidationError(errors)

    agent = Agent(slug=slug, chat_provider=provider, **{f: spec[f] for f in AGENT_FIELDS if f in spec})
    try:
        agent.full_clean()
    except ValidationError as exc:
        raise ValidationError(exc.message_dict) from None
    agent.save()
    for index, tool in enumerate(data.get("tools", [])):
        try:
            created = agent_tool_add(
                agent=agent,
                tool=tool.get("tool", ""),
                config=tool.get("config", {}),
                mcp_server=servers.get(index),
                mcp_tool_name=tool.get("mcp_tool_name", ""),
            )
        except ValidationError as exc:
            raise ValidationError({f"tools[{index}]": [" ".join(m) for m in exc.message_dict.values()]}) from None
        if not tool.get("enabled", True):
            created.enabled = False
            created.save(update_fields=["enabled"])
    for child in children:
        subagent_link_add(parent=agent, child=child)
    return agent
