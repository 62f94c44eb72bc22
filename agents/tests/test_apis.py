"""REST API of agents, model providers and runs, through DRF's test client on each tenant's own domain, with
real API keys, PostgreSQL and Redis. Faked: only the external model provider (the local OpenAI-compatible
server, for the provider connectivity test). Runs here are started without a worker (queued), which is
all that their reading and cancelling need; the conversation tests run them end to end."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import tenant_context

from agents.models import Agent, AgentRun, AgentTool, ModelProvider, RunStatus
from agents.runtime.streams import redis_client, run_stream_key
from agents.services.agents import agent_publish, agent_tool_add, subagent_link_add
from agents.services.providers import provider_save
from agents.services.runs import run_start
from api.tests.fixtures import api_client, key_for
from conftest import PASSWORD, host_of
from nexent_site.testing.fake_openai import FakeOpenAI
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def provider(tenant: Tenant, name: str = "API chat", **fields: Any) -> ModelProvider:
    values = {"kind": "chat", "base_url": "http://127.0.0.1:9/v1", "model_name": "m", **fields}
    with tenant_context(tenant):
        return provider_save(provider=ModelProvider(name=name, **values), api_key="sk-test-0123456789abcd")


def agent(tenant: Tenant, slug: str, *, publish: bool = True, **fields: Any) -> Agent:
    with tenant_context(tenant):
        created = Agent.objects.create(name=slug.title(), slug=slug, **fields)
        if publish:
            agent_publish(agent=created, note="first")
        return created


def member(tenant: Tenant, email: str) -> None:
    from accounts.services import user_create

    with tenant_context(tenant):
        user_create(email=email, password=PASSWORD)


def error(response: Any) -> dict:
    return response.json()["error"]


# --- agents -------------------------------------------------------------------------------------------------
def test_chat_sees_published_agents_and_admin_sees_drafts_too(tenant_a: Tenant, api_as: Any) -> None:
    # given
    agent(tenant_a, "pub-bot", role_prompt="secret instructions")
    agent(tenant_a, "draft-bot", publish=False)

    # when
    chat = api_as("chat").get("/api/v1/agents/")
    admin = api_as("admin").get("/api/v1/agents/")

    # then
    assert chat.status_code == 200, chat.content
    by_slug = {row["slug"]: row for row in chat.json()["results"]}
    assert "draft-bot" not in by_slug
    assert by_slug["pub-bot"]["state"] == "published" and by_slug["pub-bot"]["published_version"]["number"] == 1
    assert by_slug["pub-bot"]["draft"] is None and "secret instructions" not in chat.content.decode()
    rows = {row["slug"]: row for row in admin.json()["results"]}
    assert rows["draft-bot"]["state"] == "draft" and rows["draft-bot"]["published_version"] is None
    assert rows["pub-bot"]["draft"]["role_prompt"] == "secret instructions"


def test_an_agent_is_found_by_slug_and_a_draft_only_by_admin(tenant_a: Tenant, api_as: Any) -> None:
    agent(tenant_a, "findable")
    agent(tenant_a, "hidden-draft", publish=False)
    chat, admin = api_as("chat"), api_as("admin")

    assert chat.get("/api/v1/agents/findable/").json()["name"] == "Findable"
    assert chat.get("/api/v1/agents/hidden-draft/").status_code == 404
    assert chat.get("/api/v1/agents/hidden-draft/versions/").status_code == 404
    assert admin.get("/api/v1/agents/hidden-draft/").json()["state"] == "draft"
    assert error(chat.get("/api/v1/agents/no-such-agent/"))["code"] == "not_found"
    assert [r["slug"] for r in chat.get("/api/v1/agents/?q=FINDA").json()["results"]] == ["findable"]
    for odd in ("a%00b", "%ED%A0%80", "x" * 300):
        assert chat.get(f"/api/v1/agents/{odd}/").status_code == 404


def test_admin_creates_edits_and_publishes_an_agent(tenant_a: Tenant, api_as: Any) -> None:
    # given
    chat_provider = provider(tenant_a)
    helper = agent(tenant_a, "sub-helper")
    admin = api_as("admin")

    # when: created as a draft
    created = admin.post(
        "/api/v1/agents/",
        {
            "slug": "api-made",
            "name": "API made",
            "mode": "tools",
            "chat_provider": chat_provider.pk,
            "example_questions": ["What time is it?"],
            "tools": [{"tool": "datetime", "config": {"timezone": "Europe/Paris"}}],
            "sub_agents": [helper.slug],
        },
        format="json",
    )

    # then
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["state"] == "draft" and body["published_version"] is None
    assert body["draft"]["chat_provider"] == chat_provider.pk and body["draft"]["sub_agents"] == ["sub-helper"]
    assert body["draft"]["tools"][0]["tool"] == "datetime" and body["draft"]["tools"][0]["config"]["timezone"] == (
        "Europe/Paris"
    )
    assert api_as("chat").get("/api/v1/agents/api-made/").status_code == 404

    # when: edited (the tool list is replaced) and published
    edited = admin.patch(
        "/api/v1/agents/api-made/",
        {"role_prompt": "Be brief.", "tools": [{"tool": "calculator"}], "sub_agents": []},
        format="json",
    )
    published = admin.post("/api/v1/agents/api-made/publish/", {"note": "launch"}, format="json")

    # then
    assert edited.status_code == 200, edited.content
    assert [t["tool"] for t in edited.json()["draft"]["tools"]] == ["calculator"]
    assert edited.json()["draft"]["sub_agents"] == []
    assert published.status_code == 201, published.content
    assert published.json()["number"] == 1 and published.json()["is_published"] is True
    assert published.json()["spec"]["instructions"]["role"] == "Be brief."
    assert published.json()["created_by"] == "owner@alpha.test"
    versions = api_as("chat").get("/api/v1/agents/api-made/versions/").json()
    assert [(v["number"], v["note"], v["spec"]) for v in versions["results"]] == [(1, "launch", None)]
    with tenant_context(tenant_a):
        assert list(AgentTool.objects.filter(agent__slug="api-made").values_list("tool", flat=True)) == ["calculator"]


@pytest.mark.parametrize(
    ("payload", "field", "message"),
    [
        ({"slug": "Not A Slug", "name": "x"}, "slug", "lowercase letters"),
        ({"slug": "taken", "name": "x"}, "slug", "already exists"),
        ({"name": "x"}, "slug", "required"),
        ({"slug": "nul\x00slug", "name": "x"}, "slug", "slug"),
        ({"slug": "fine", "name": "x", "tools": [{"tool": "mcp", "mcp_server": "a\x00"}]}, "tools", "does not exist"),
        ({"slug": "fine", "name": "x", "colour": "red"}, "colour", "Unknown field"),
        ({"slug": "fine", "name": "x", "temperature": 5}, "temperature", "less than or equal to 2"),
        ({"slug": "fine", "name": "x", "max_tokens": 5}, "max_tokens", "greater than or equal to 16"),
        ({"slug": "fine", "name": "x", "mode": "magic"}, "mode", "not a valid choice"),
        ({"slug": "fine", "name": "x", "chat_provider": 999999}, "chat_provider", "does not exist"),
        ({"slug": "fine", "name": "x", "tools": [{"tool": "nope"}]}, "tools[0].tool", "Unknown tool 'nope'"),
        (
            {"slug": "fine", "name": "x", "tools": [{"tool": "datetime", "config": {"timezone": "Mars/Olympus"}}]},
            "tools[0].config",
            "Mars/Olympus",
        ),
        ({"slug": "fine", "name": "x", "tools": [{"tool": "calculator", "x": 1}]}, "tools", "Unknown field"),
        ({"slug": "fine", "name": "x", "tools": [{"tool": "datetime", "config": {"a": "\x00"}}]}, "tools", "NUL"),
        ({"slug": "fine", "name": "x", "sub_agents": ["ghost"]}, "sub_agents", "No agent “ghost”"),
        ({"slug": "fine", "name": "x", "sub_agents": ["fine"]}, "sub_agents", "cannot manage itself"),
    ],
)
def test_invalid_agents_are_refused_naming_the_field(
    tenant_a: Tenant, api_as: Any, payload: dict, field: str, message: str
) -> None:
    agent(tenant_a, "taken")
    response = api_as("admin").post("/api/v1/agents/", payload, format="json")
    assert response.status_code == 400, response.content
    body = error(response)
    assert body["code"] == "invalid" and field in body["fields"], body
    assert message in str(body["fields"][field])
    with tenant_context(tenant_a):
        assert not Agent.objects.filter(slug="fine").exists()


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/agents/", r'{"slug": "ok", "name": "\ud800"}', "name"),
        ("/api/v1/agents/", r'{"slug": "\ud800", "name": "x"}', "slug"),
        (
            "/api/v1/agents/",
            r'{"slug": "ok", "name": "x", "tools": [{"tool": "mcp", "mcp_server": "\ud800"}]}',
            "tools",
        ),
        ("/api/v1/agents/", r'{"slug": "ok", "name": "x", "example_questions": ["\u0000"]}', "example_questions"),
        ("/api/v1/agents/", r'{"slug": "ok", "name": "x", "mode": "\ud800"}', "mode"),
        ("/api/v1/agents/", r'{"slug": "ok", "name": "x", "\ud800": 1}', "\\ud800"),
        (
            "/api/v1/providers/",
            r'{"name": "\ud800", "kind": "chat", "base_url": "http://h/v1", "model_name": "m"}',
            "name",
        ),
        (
            "/api/v1/providers/",
            r'{"name": "p", "kind": "chat", "base_url": "http://h\u0000/", "model_name": "m"}',
            "base_url",
        ),
    ],
)
def test_text_the_database_cannot_hold_is_refused_by_field(
    tenant_a: Tenant, api_as: Any, path: str, body: str, field: str
) -> None:
    response = api_as("admin").post(path, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert field in error(response)["fields"]


def test_an_edit_that_would_make_a_cycle_is_refused_and_changes_nothing(tenant_a: Tenant, api_as: Any) -> None:
    # given: parent → child
    parent, child = agent(tenant_a, "parent-bot"), agent(tenant_a, "child-bot")
    with tenant_context(tenant_a):
        subagent_link_add(parent=parent, child=child)
    # when
    response = api_as("admin").patch(
        "/api/v1/agents/child-bot/", {"name": "Renamed", "sub_agents": ["parent-bot"]}, format="json"
    )
    # then
    assert response.status_code == 400
    assert "cycle" in error(response)["fields"]["sub_agents"][0]
    with tenant_context(tenant_a):
        assert Agent.objects.get(slug="child-bot").name == "Child-Bot"


def test_publishing_with_an_unpublished_sub_agent_is_refused(tenant_a: Tenant, api_as: Any) -> None:
    parent, child = agent(tenant_a, "boss", publish=False), agent(tenant_a, "intern", publish=False)
    with tenant_context(tenant_a):
        subagent_link_add(parent=parent, child=child)
    response = api_as("admin").post("/api/v1/agents/boss/publish/", {}, format="json")
    assert response.status_code == 400
    assert "“intern” has no published version" in error(response)["message"]


def test_writing_agents_needs_the_admin_scope(tenant_a: Tenant, api_as: Any) -> None:
    agent(tenant_a, "locked")
    chat = api_as("chat")
    for response in (
        chat.post("/api/v1/agents/", {"slug": "x", "name": "x"}, format="json"),
        chat.patch("/api/v1/agents/locked/", {"name": "x"}, format="json"),
        chat.post("/api/v1/agents/locked/publish/", {}, format="json"),
    ):
        assert response.status_code == 403
        assert error(response) == {"code": "missing_scope", "message": "This needs the “admin” scope."}
    assert error(api_as("files").get("/api/v1/agents/"))["code"] == "missing_scope"


def test_another_tenant_can_neither_see_nor_change_an_agent(tenant_a: Tenant, tenant_b: Tenant, api_as: Any) -> None:
    # given: an agent of A
    agent(tenant_a, "alpha-only")
    b_admin = api_as("admin", tenant=tenant_b)

    # when / then: B's admin key on B's domain does not find it
    assert "alpha-only" not in [row["slug"] for row in b_admin.get("/api/v1/agents/").json()["results"]]
    assert b_admin.get("/api/v1/agents/alpha-only/").status_code == 404
    assert b_admin.patch("/api/v1/agents/alpha-only/", {"name": "pwned"}, format="json").status_code == 404
    assert b_admin.post("/api/v1/agents/alpha-only/publish/", {}, format="json").status_code == 404
    # and A's key is unknown on B's domain
    _, raw = key_for(tenant_a, scopes="admin")
    assert api_client(tenant_b, raw).get("/api/v1/agents/").status_code == 401
    with tenant_context(tenant_a):
        assert Agent.objects.get(slug="alpha-only").name == "Alpha-Only"
        assert Agent.objects.get(slug="alpha-only").published_version.number == 1


# --- providers ----------------------------------------------------------------------------------------------
def test_admin_manages_providers_and_never_gets_a_key_back(tenant_a: Tenant, api_as: Any) -> None:
    admin = api_as("admin")

    # when: created with a key
    created = admin.post(
        "/api/v1/providers/",
        {
            "name": "Remote chat",
            "kind": "chat",
            "base_url": "https://llm.example/v1",
            "model_name": "big-model",
            "api_key": "sk-live-abcdefghijkl9876",
            "extra_headers": {"X-Org": "acme"},
        },
        format="json",
    )

    # then: the key is stored encrypted and only its last characters are shown
    assert created.status_code == 201, created.content
    body = created.json()
    assert "api_key" not in body and "sk-live" not in created.content.decode()
    assert (body["masked_key"], body["has_api_key"], body["status"]) == ("…9876", True, "unknown")
    provider_id = body["id"]
    with tenant_context(tenant_a):
        assert ModelProvider.objects.get(pk=provider_id).api_key == "sk-live-abcdefghijkl9876"

    # when: edited without a key, the key stays; an empty key removes it
    kept = admin.patch(f"/api/v1/providers/{provider_id}/", {"timeout_s": 30}, format="json")
    assert kept.status_code == 200 and kept.json()["masked_key"] == "…9876" and kept.json()["timeout_s"] == 30
    removed = admin.patch(f"/api/v1/providers/{provider_id}/", {"api_key": ""}, format="json")
    assert (removed.json()["masked_key"], removed.json()["has_api_key"]) == ("", False)
    assert provider_id in [row["id"] for row in admin.get("/api/v1/providers/").json()["results"]]
    assert admin.get(f"/api/v1/providers/{provider_id}/").json()["name"] == "Remote chat"

    # when: deleted
    assert admin.delete(f"/api/v1/providers/{provider_id}/").status_code == 204
    assert admin.get(f"/api/v1/providers/{provider_id}/").status_code == 404


def test_a_provider_in_use_is_not_deleted(tenant_a: Tenant, api_as: Any) -> None:
    used = provider(tenant_a, "Busy chat")
    agent(tenant_a, "user-of-busy", chat_provider=used)
    response = api_as("admin").delete(f"/api/v1/providers/{used.pk}/")
    assert response.status_code == 409
    assert error(response)["code"] == "in_use" and "user-of-busy" in error(response)["message"]


def test_one_default_provider_per_kind(tenant_a: Tenant, api_as: Any) -> None:
    admin = api_as("admin")
    first = provider(tenant_a, "First default")
    second = provider(tenant_a, "Second")
    assert admin.patch(f"/api/v1/providers/{first.pk}/", {"is_default": True}, format="json").status_code == 200
    response = admin.patch(f"/api/v1/providers/{second.pk}/", {"is_default": True}, format="json")
    assert response.status_code == 200, response.content
    with tenant_context(tenant_a):
        defaults = list(ModelProvider.objects.filter(kind="chat", is_default=True).values_list("name", flat=True))
    assert defaults == ["Second"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"base_url": "ftp://files.example"}, "base_url"),
        ({"base_url": "http://[::1"}, "base_url"),
        ({"base_url": "https://user:pw@llm.example/v1"}, "base_url"),
        ({"name": "Taken"}, "name"),
        ({"name": "Nul\x00name"}, "name"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"kind": "video"}, "kind"),
        ({"extra_headers": {"Bad Header": "x"}}, "extra_headers"),
        ({"extra_headers": {"X-Ok": "a\x00b"}}, "extra_headers"),
        ({"secret": "x"}, "secret"),
    ],
)
def test_invalid_providers_are_refused_naming_the_field(
    tenant_a: Tenant, api_as: Any, payload: dict, field: str
) -> None:
    provider(tenant_a, "Taken")
    body = {"name": "New", "kind": "chat", "base_url": "https://llm.example/v1", "model_name": "m", **payload}
    response = api_as("admin").post("/api/v1/providers/", body, format="json")
    assert response.status_code == 400, response.content
    assert field in error(response)["fields"]
    with tenant_context(tenant_a):
        assert not ModelProvider.objects.filter(name="New").exists()


def test_the_provider_test_action_makes_a_real_call(tenant_a: Tenant, api_as: Any, fake_llm: FakeOpenAI) -> None:
    tested = provider(tenant_a, "Fake-backed", base_url=fake_llm.base_url, model_name="fake-model")
    response = api_as("admin").post(f"/api/v1/providers/{tested.pk}/test/")
    assert response.status_code == 200, response.content
    assert (response.json()["status"], response.json()["status_error"]) == ("available", "")
    assert fake_llm.chat_requests()[0]["model"] == "fake-model"


def test_providers_need_the_admin_scope_and_stay_in_their_tenant(
    tenant_a: Tenant, tenant_b: Tenant, api_as: Any
) -> None:
    mine = provider(tenant_a, "Alpha private")
    response = api_as("chat").get("/api/v1/providers/")
    assert response.status_code == 403 and error(response)["code"] == "missing_scope"
    b_admin = api_as("admin", tenant=tenant_b)
    assert b_admin.get(f"/api/v1/providers/{mine.pk}/").status_code == 404
    assert b_admin.patch(f"/api/v1/providers/{mine.pk}/", {"name": "x"}, format="json").status_code == 404
    assert b_admin.delete(f"/api/v1/providers/{mine.pk}/").status_code == 404
    assert "Alpha private" not in [row["name"] for row in b_admin.get("/api/v1/providers/").json()["results"]]


# --- runs ---------------------------------------------------------------------------------------------------
def queued_run(tenant: Tenant, slug: str, email: str) -> AgentRun:
    with tenant_context(tenant):
        return run_start(
            agent=Agent.objects.get(slug=slug),
            messages="hello",
            trigger=AgentRun.Trigger.API,
            user_email=email,
            enqueue=False,
        )


def test_chat_sees_its_own_runs_and_admin_sees_every_run(tenant_a: Tenant, api_as: Any) -> None:
    # given: a run of the owner and one of a member
    agent(tenant_a, "runner")
    member(tenant_a, "runner@alpha.test")
    owners = queued_run(tenant_a, "runner", "owner@alpha.test")
    members = queued_run(tenant_a, "runner", "runner@alpha.test")
    member_chat = api_as("chat", email="runner@alpha.test")

    # when / then
    assert member_chat.get(f"/api/v1/runs/{members.id}/").json()["status"] == "queued"
    assert member_chat.get(f"/api/v1/runs/{owners.id}/").status_code == 404
    assert [r["id"] for r in member_chat.get("/api/v1/runs/").json()["results"]] == [str(members.id)]
    owner_chat = api_as("chat")  # the owner with only `chat`: their own runs, like anyone
    assert owner_chat.get(f"/api/v1/runs/{members.id}/").status_code == 404
    admin = api_as("admin")
    listed = admin.get("/api/v1/runs/?agent=runner&status=queued").json()["results"]
    assert {r["id"] for r in listed} == {str(owners.id), str(members.id)}
    detail = admin.get(f"/api/v1/runs/{members.id}/").json()
    assert (detail["agent"], detail["version"], detail["trigger"]) == ("runner", 1, "api")
    assert detail["input"] == [{"role": "user", "content": "hello"}]
    assert admin.get("/api/v1/runs/not-a-uuid/").status_code == 404
    assert admin.get("/api/v1/runs/?status=sleeping").status_code == 400


def test_a_run_is_cancelled_and_its_events_read_as_json_or_server_sent_events(tenant_a: Tenant, api_as: Any) -> None:
    # given
    agent(tenant_a, "stoppable")
    run = queued_run(tenant_a, "stoppable", "owner@alpha.test")
    chat = api_as("chat")

    # when
    cancelled = chat.post(f"/api/v1/runs/{run.id}/cancel/")

    # then
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    events = chat.get(f"/api/v1/runs/{run.id}/events/").json()
    assert events["status"] == "cancelled"
    assert [(e["seq"], e["type"]) for e in events["events"]] == [(1, "run_finished")]
    assert chat.get(f"/api/v1/runs/{run.id}/events/?after=1").json()["events"] == []
    streamed = chat.get(f"/api/v1/runs/{run.id}/events/", HTTP_ACCEPT="text/event-stream")
    assert streamed.status_code == 200 and streamed["Content-Type"].startswith("text/event-stream")
    assert b"id: 1\nevent: run_finished\n" in streamed.content

    # when: the live stream has expired, the stored events remain
    client = redis_client()
    try:
        client.delete(run_stream_key("alpha", str(run.id)))
    finally:
        client.close()
    assert [e["type"] for e in chat.get(f"/api/v1/runs/{run.id}/events/").json()["events"]] == ["run_finished"]

    # and bad input is a 400 naming the parameter
    response = chat.get(f"/api/v1/runs/{run.id}/events/?after=-1")
    assert response.status_code == 400 and "after" in error(response)["fields"]


def test_another_tenant_cannot_read_or_cancel_a_run(tenant_a: Tenant, tenant_b: Tenant, api_as: Any) -> None:
    agent(tenant_a, "private-runner")
    run = queued_run(tenant_a, "private-runner", "owner@alpha.test")
    b_admin = api_as("admin", tenant=tenant_b)
    assert b_admin.get(f"/api/v1/runs/{run.id}/").status_code == 404
    assert b_admin.get(f"/api/v1/runs/{run.id}/events/").status_code == 404
    assert b_admin.post(f"/api/v1/runs/{run.id}/cancel/").status_code == 404
    assert str(run.id) not in b_admin.get("/api/v1/runs/").content.decode()
    with tenant_context(tenant_a):
        assert AgentRun.objects.get(pk=run.pk).status == RunStatus.QUEUED


def test_a_session_of_another_tenant_is_not_signed_in_here(tenant_a: Tenant, tenant_b: Tenant, client: Client) -> None:
    # given: B's owner signed in on B's domain
    from accounts.models import User

    with tenant_context(tenant_b):
        client.force_login(User.objects.get(email="owner@beta.test"))
    assert client.get("/api/v1/agents/", HTTP_HOST=host_of(tenant_b)).status_code == 200
    # when / then: the same cookie on A's domain is nobody
    response = client.get("/api/v1/agents/", HTTP_HOST=host_of(tenant_a))
    assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"


def queries_for(client: Any, path: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(path)
    assert response.status_code == 200, response.content
    return len(queries)


def test_listing_agents_takes_the_same_queries_however_many_there_are(tenant_a: Tenant, api_as: Any) -> None:
    # given: an admin key (its last_used_at written by a first request)
    admin = api_as("admin")
    admin.get("/api/v1/agents/")
    child = agent(tenant_a, "shared-child")

    def add(count: int, start: int) -> None:
        for index in range(start, start + count):
            made = agent(tenant_a, f"many-{index}")
            with tenant_context(tenant_a):
                agent_tool_add(agent=made, tool="calculator")
                subagent_link_add(parent=made, child=child)

    # when
    add(2, 0)
    few = queries_for(admin, "/api/v1/agents/?page_size=100")
    add(6, 2)
    many = queries_for(admin, "/api/v1/agents/?page_size=100")

    # then
    assert few == many


def test_a_chat_mode_draft_says_which_of_its_tools_it_will_not_use(tenant_a: Tenant, api_as: Any) -> None:
    admin = api_as("admin")
    payload = {"slug": "chatty", "name": "Chatty", "mode": "chat", "tools": [{"tool": "calculator"}]}
    created = admin.post("/api/v1/agents/", payload, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["draft"]["unused_in_mode"] == [
        "Chat mode uses only knowledge_search tools: calculator will be used in tools mode only."
    ]
    switched = admin.patch("/api/v1/agents/chatty/", {"mode": "tools"}, format="json")
    assert switched.status_code == 200 and switched.json()["draft"]["unused_in_mode"] == []
