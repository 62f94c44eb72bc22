"""Agents: tool settings validated against each tool's schema, sub-agent cycles refused, immutable
versions with publish and rollback, import/export, and tenant isolation of all of it."""

import json

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django_tenants.utils import tenant_context

from agents.models import Agent, AgentTool, McpServer
from agents.services.agents import (
    agent_export,
    agent_import,
    agent_publish,
    agent_rollback,
    agent_tool_add,
    subagent_link_add,
)
from agents.tools.builtin import CalculatorTool
from agents.tools.netguard import BlockedURL, check_url
from conftest import PASSWORD, host_of, owner_email
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def agent(slug: str, **fields: object) -> Agent:
    return Agent.objects.create(name=slug.title(), slug=slug, **fields)


@pytest.mark.parametrize(
    ("tool", "config", "message"),
    [
        ("nope", {}, "Unknown tool 'nope'"),
        ("datetime", {"timezone": "Mars/Olympus"}, "timezone: 'Mars/Olympus' is not one of"),
        ("web_fetch", {"timeout_s": 999}, "timeout_s: 999 is greater than the maximum of 30"),
        ("calculator", {"surprise": 1}, "Additional properties are not allowed ('surprise' was unexpected)"),
        ("knowledge_search", {"top_k": "five"}, "top_k: 'five' is not of type 'integer'"),
        ("datetime", [], "must be a JSON object"),
    ],
)
def test_tool_settings_are_validated_against_the_tool_schema(
    tenant_a: Tenant, tool: str, config: object, message: str
) -> None:
    with tenant_context(tenant_a):
        owner = agent("tooly")
        with pytest.raises(ValidationError) as excinfo:
            agent_tool_add(agent=owner, tool=tool, config=config)
        assert message in " ".join(" ".join(v) for v in excinfo.value.message_dict.values())
        assert not AgentTool.objects.filter(agent=owner).exists()


def test_valid_tool_settings_get_their_defaults(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        tool = agent_tool_add(agent=agent("fetchy"), tool="web_fetch", config={"timeout_s": 5})
        assert tool.config == {"timeout_s": 5, "max_bytes": 1_000_000}


def test_mcp_tools_must_exist_on_their_server(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        server = McpServer.objects.create(name="files", url="http://mcp.example/mcp", tools=[{"name": "read_file"}])
        with pytest.raises(ValidationError, match="files has no tool 'rm_rf'"):
            agent_tool_add(agent=agent("mcpy"), tool="mcp", mcp_server=server, mcp_tool_name="rm_rf")
        assert agent_tool_add(
            agent=Agent.objects.get(slug="mcpy"), tool="mcp", mcp_server=server, mcp_tool_name="read_file"
        ).pk


def test_sub_agent_cycles_are_refused_with_the_path(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        a, b, c = agent("a"), agent("b"), agent("c")
        subagent_link_add(parent=a, child=b)
        subagent_link_add(parent=b, child=c)
        with pytest.raises(ValidationError) as excinfo:
            subagent_link_add(parent=c, child=a)
        assert excinfo.value.message_dict["child"] == ["This would create a cycle: c → a → b → c."]
        with pytest.raises(ValidationError, match="cannot manage itself"):
            subagent_link_add(parent=a, child=a)


def test_publishing_snapshots_the_draft_and_rollback_republishes(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        draft = agent("versioned", role_prompt="first")
        agent_tool_add(agent=draft, tool="calculator")
        v1 = agent_publish(agent=draft, user_email="x@y.z")

        draft.role_prompt = "second"
        draft.save()
        agent_tool_add(agent=draft, tool="datetime")
        v1.refresh_from_db()
        assert v1.spec["instructions"]["role"] == "first"  # editing the draft changes no version
        assert [t["tool"] for t in v1.spec["tools"]] == ["calculator"]

        v2 = agent_publish(agent=draft)
        assert (v2.number, v2.spec["instructions"]["role"]) == (2, "second")
        draft.refresh_from_db()
        assert draft.published_version == v2

        agent_rollback(agent=draft, version=v1)
        draft.refresh_from_db()
        assert draft.published_version == v1 and draft.versions.count() == 2


def test_a_sub_agent_must_be_published_before_its_parent(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        parent, child = agent("parent"), agent("child")
        subagent_link_add(parent=parent, child=child)
        with pytest.raises(ValidationError, match="Sub-agent “child” has no published version"):
            agent_publish(agent=parent)
        agent_publish(agent=child)
        assert agent_publish(agent=parent).spec["sub_agents"][0]["slug"] == "child"


def test_export_then_import_round_trips(tenant_a: Tenant, tenant_b: Tenant) -> None:
    with tenant_context(tenant_a):
        helper = agent("helper")
        original = agent(
            "original",
            role_prompt="Be exact.",
            example_questions=["Why?"],
            mode="chat",
            temperature=0.7,
            max_tokens=256,
        )
        agent_tool_add(agent=original, tool="datetime", config={"timezone": "Asia/Shanghai"})
        subagent_link_add(parent=original, child=helper)
        exported = json.loads(json.dumps(agent_export(original)))

        copy = agent_import(data=exported, slug="copy")
        assert agent_export(copy) == {**exported, "agent": {**exported["agent"], "slug": "copy"}}
        assert copy.max_tokens == 256

    # in another tenant the references are missing: each is reported, nothing is created
    with tenant_context(tenant_b):
        with pytest.raises(ValidationError) as excinfo:
            agent_import(data=exported)
        assert "No agent “helper” to use as a sub-agent." in excinfo.value.message_dict["sub_agents"]
        assert not Agent.objects.filter(slug="original").exists()


def test_import_refuses_files_that_are_not_exports(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        for data in ({"format": "other"}, [], "text"):
            with pytest.raises(ValidationError, match="Not a Nexent agent export"):
                agent_import(data=data)


def test_agents_of_tenant_a_are_invisible_from_b(client: Client, tenant_a: Tenant, tenant_b: Tenant) -> None:
    with tenant_context(tenant_a):
        secret = agent("secret-agent")
    with tenant_context(tenant_b):
        assert not Agent.objects.filter(slug="secret-agent").exists()
    client.post("/admin/login/", {"username": owner_email("beta"), "password": PASSWORD}, HTTP_HOST=host_of(tenant_b))
    page = client.get("/admin/agents/agent/", HTTP_HOST=host_of(tenant_b)).content.decode()
    assert "secret-agent" not in page
    response = client.get(f"/admin/agents/agent/{secret.pk}/playground/", HTTP_HOST=host_of(tenant_b))
    assert response.status_code == 404


def test_calculator_is_safe() -> None:
    calc = CalculatorTool()
    assert calc.forward("(3.5 + 2) * 4 / sqrt(16)") == "5.5"
    assert calc.forward("__import__('os').system('true')").startswith("Error")
    assert calc.forward("1/0").startswith("Error")
    assert calc.forward("9**9**9**9").startswith("Error")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost:8000/",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest",
        "http://[::1]/",
        "file:///etc/passwd",
        "http://user:pw@example.com/",
    ],
)
def test_web_fetch_refuses_internal_addresses(url: str) -> None:
    with pytest.raises(BlockedURL):
        check_url(url, allow_private=False)
