"""The tenant admin for agents: export, import (with field errors), rollback, runs trace, and forms that
cannot reach another tenant's agents or MCP servers."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django_tenants.utils import tenant_context

from agents.models import Agent, AgentRun, McpServer
from agents.services.agents import agent_publish, agent_tool_add
from conftest import PASSWORD, host_of, owner_email
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner_a(client: Client, tenant_a: Tenant) -> Client:
    client.post("/admin/login/", {"username": owner_email("alpha"), "password": PASSWORD}, HTTP_HOST=host_of(tenant_a))
    return client


def test_the_admin_is_the_tenants_own_and_names_its_icon(owner_a: Client, tenant_a: Tenant) -> None:
    """The site icon is in the page (browsers otherwise ask for /favicon.ico, a 404 in the console)."""
    page = owner_a.get("/admin/", HTTP_HOST=host_of(tenant_a)).content.decode()
    assert f"{tenant_a.name} · Nexent" in page
    assert '<link rel="icon" href="data:image/svg+xml' in page


def test_export_import_and_rollback_through_the_admin(owner_a: Client, tenant_a: Tenant) -> None:
    host = {"HTTP_HOST": host_of(tenant_a)}
    with tenant_context(tenant_a):
        agent = Agent.objects.create(name="Exp", slug="exp", role_prompt="v1 prompt")
        agent_tool_add(agent=agent, tool="calculator")
        v1 = agent_publish(agent=agent)
        agent.role_prompt = "v2 prompt"
        agent.save()
        agent_publish(agent=agent)

    exported = owner_a.post(
        "/admin/agents/agent/", {"action": "export_selected", "_selected_action": [agent.pk]}, **host
    )
    assert exported["Content-Disposition"] == 'attachment; filename="exp.json"'
    data = json.loads(exported.content)
    assert data["agent"]["role_prompt"] == "v2 prompt" and data["tools"][0]["tool"] == "calculator"

    upload = SimpleUploadedFile("exp.json", exported.content, content_type="application/json")
    imported = owner_a.post("/admin/agents/agent/import/", {"file": upload, "slug": "exp-copy"}, **host)
    assert imported.status_code == 302
    with tenant_context(tenant_a):
        assert Agent.objects.get(slug="exp-copy").tools.get().tool == "calculator"

    broken = SimpleUploadedFile("x.json", b"{not json", content_type="application/json")
    refused = owner_a.post("/admin/agents/agent/import/", {"file": broken}, **host)
    assert refused.status_code == 400 and "not valid JSON" in refused.content.decode()

    duplicate = SimpleUploadedFile("exp.json", exported.content, content_type="application/json")
    refused = owner_a.post("/admin/agents/agent/import/", {"file": duplicate}, **host)
    assert refused.status_code == 400 and "already exists" in refused.content.decode()

    rolled = owner_a.post(f"/admin/agents/agent/{agent.pk}/rollback/", {"version": v1.pk}, **host)
    assert rolled.status_code == 302
    with tenant_context(tenant_a):
        assert Agent.objects.get(pk=agent.pk).published_version_id == v1.pk


def test_runs_are_listed_read_only_with_filters(owner_a: Client, tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        agent = Agent.objects.create(name="Traced", slug="traced")
        version = agent_publish(agent=agent)
        run = AgentRun.objects.create(
            agent=agent,
            version=version,
            spec=version.spec,
            trigger="api",
            status="failed",
            error="model call failed: boom",
            input=[],
        )
    host = {"HTTP_HOST": host_of(tenant_a)}
    listing = owner_a.get("/admin/agents/agentrun/?status__exact=failed", **host)
    assert listing.status_code == 200 and str(run.id)[:8] in listing.content.decode()
    assert owner_a.get("/admin/agents/agentrun/?status__exact=succeeded", **host).context["cl"].result_count == 0
    detail = owner_a.get(f"/admin/agents/agentrun/{run.pk}/change/", **host)
    assert "model call failed: boom" in detail.content.decode() and detail.context["has_change_permission"] is False
    assert owner_a.get("/admin/agents/agentrun/add/", **host).status_code == 403


def test_estimated_token_counts_are_marked_and_can_be_filtered(owner_a: Client, tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        agent = Agent.objects.create(name="Counted", slug="counted")
        version = agent_publish(agent=agent)
        common = {"agent": agent, "version": version, "spec": version.spec, "trigger": "chat", "status": "succeeded"}
        reported = AgentRun.objects.create(**common, tokens_in=1200, tokens_out=34)
        estimated = AgentRun.objects.create(**common, tokens_in=56, tokens_out=78, usage_estimated=True)
    host = {"HTTP_HOST": host_of(tenant_a)}
    page = owner_a.get("/admin/agents/agentrun/", **host).content.decode()
    assert "1,200 / 34" in page and "≈ 56 / 78" in page and "≈ 1,200" not in page
    only = owner_a.get("/admin/agents/agentrun/?usage_estimated__exact=1", **host).context["cl"].result_list
    assert [run.pk for run in only] == [estimated.pk] and reported.pk != estimated.pk


def agent_form(*, name: str, slug: str, mode: str = "", tool: dict, child: int) -> dict:
    """The agent change form's data, with one tool and one sub-agent."""
    data = {
        "name": name,
        "slug": slug,
        "temperature": "0.3",
        "max_steps": "4",
        "run_timeout_s": "60",
        "example_questions": "[]",
        "tools-TOTAL_FORMS": "1",
        "tools-INITIAL_FORMS": "0",
        **{f"tools-0-{field}": value for field, value in {"config": "{}", "enabled": "on", **tool}.items()},
        "sub_agent_links-TOTAL_FORMS": "1",
        "sub_agent_links-INITIAL_FORMS": "0",
        "sub_agent_links-0-child": str(child),
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
    }
    return {**data, "mode": mode} if mode else data


def test_forms_cannot_reach_another_tenants_agents_or_mcp_servers(
    owner_a: Client, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    with tenant_context(tenant_b):
        b_agent = Agent.objects.create(name="B agent", slug="b-agent")
        b_server = McpServer.objects.create(name="b-mcp", url="http://b.example/mcp", tools=[{"name": "x"}])
    with tenant_context(tenant_a):
        a_agent = Agent.objects.create(name="A agent", slug="a-agent")
        a_ids = set(Agent.objects.values_list("pk", flat=True))
        a_servers = set(McpServer.objects.values_list("pk", flat=True))
    response = owner_a.post(
        f"/admin/agents/agent/{a_agent.pk}/change/",
        agent_form(
            name="A agent",
            slug="a-agent",
            mode="tools",
            tool={"tool": "mcp", "mcp_server": str(b_server.pk), "mcp_tool_name": "x"},
            child=b_agent.pk,
        ),
        HTTP_HOST=host_of(tenant_a),
    )
    with tenant_context(tenant_a):
        links = list(Agent.objects.get(pk=a_agent.pk).sub_agent_links.values_list("child__slug", flat=True))
        servers = list(Agent.objects.get(pk=a_agent.pk).tools.values_list("mcp_server__name", flat=True))
    assert "b-agent" not in links and "b-mcp" not in servers
    if b_agent.pk not in a_ids or b_server.pk not in a_servers:
        assert response.status_code == 200  # the form reports the unknown choice
        assert "Select a valid choice" in response.content.decode()


def test_saving_a_chat_mode_agent_warns_of_the_tools_and_sub_agents_it_will_not_use(
    owner_a: Client, tenant_a: Tenant
) -> None:
    with tenant_context(tenant_a):
        helper = Agent.objects.create(name="Helper", slug="helper")
        agent = Agent.objects.create(name="Talker", slug="talker", mode="chat")
    form = agent_form(name="Talker", slug="talker", tool={"tool": "calculator"}, child=helper.pk)
    url, host = f"/admin/agents/agent/{agent.pk}/change/", {"HTTP_HOST": host_of(tenant_a)}

    # chat mode: saved, with a warning for each part it will not use
    page = owner_a.post(url, {**form, "mode": "chat"}, follow=True, **host).content.decode()
    assert "was changed successfully" in page
    assert "calculator will be used in tools mode only" in page and "sub-agents helper" in page

    # tools mode uses them: no warning
    with tenant_context(tenant_a):
        Agent.objects.get(pk=agent.pk).tools.all().delete()
        Agent.objects.get(pk=agent.pk).sub_agent_links.all().delete()
    page = owner_a.post(url, {**form, "mode": "tools"}, follow=True, **host).content.decode()
    assert "was changed successfully" in page and "tools mode only" not in page
