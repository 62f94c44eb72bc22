"""The MCP server at /mcp/ as the `mcp` package's own client sees it: tools listed by the key's scopes,
agents answering through their ask_<slug> tools, knowledge search, and refusals. Real uvicorn, PostgreSQL,
Redis and Celery worker; only the model provider (chat and embeddings) is faked (the local
OpenAI-compatible test server).

`*.localhost` does not resolve on this machine, so the client connects to 127.0.0.1 and names the tenant
in the Host header."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from mcp import ClientSession

from agents.models import AgentRun
from conftest import Committed, host_of
from knowledge.tests.fixtures import upload, wait_for_documents
from nexent_site.testing.fake_openai import FakeOpenAI, Reply
from tenants.models import Tenant

pytestmark = pytest.mark.django_db
T = TypeVar("T")

MANUAL = b"""# Operations manual

## Backups
The quasar backup runs every night at two o'clock and is kept for ninety days.

## Holidays
Staff take holidays in agreement with their team lead.
"""


def mcp_call(asgi_server: dict, tenant: Tenant, key: str | None, work: Callable[[ClientSession], Awaitable[T]]) -> T:
    """Open an MCP session on the tenant's /mcp/ with `key`, run `work(session)`, close it."""
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Host": host_of(tenant), **({"Authorization": f"Bearer {key}"} if key else {})}

    async def main() -> T:
        async with (
            httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=120)) as http,
            streamable_http_client(f"http://127.0.0.1:{asgi_server['port']}/mcp/", http_client=http) as (
                read,
                write,
                _,
            ),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            return await work(session)

    return asyncio.run(main())


async def tool_names(session: ClientSession) -> set[str]:
    return {tool.name for tool in (await session.list_tools()).tools}


def test_tools_are_listed_by_the_keys_scopes(
    asgi_server: dict, committed_key: Any, published_agent: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    # given an agent in each tenant
    published_agent(slug="helper", description="Answers questions about the office")
    published_agent(tenant=tenant_b, slug="beta-bot")
    # when / then: chat keys see the agents, knowledge readers the search, admins both; never B's agents
    chat = mcp_call(asgi_server, tenant_a, committed_key(tenant_a, scopes="chat"), tool_names)
    assert "ask_helper" in chat and "knowledge_search" not in chat and "ask_beta-bot" not in chat
    reader = mcp_call(asgi_server, tenant_a, committed_key(tenant_a, scopes="knowledge:read"), tool_names)
    assert reader == {"knowledge_search"}
    admin = mcp_call(asgi_server, tenant_a, committed_key(tenant_a, scopes="admin"), tool_names)
    assert {"ask_helper", "knowledge_search"} <= admin and "ask_beta-bot" not in admin

    async def described(session: ClientSession) -> Any:
        return next(t for t in (await session.list_tools()).tools if t.name == "ask_helper")

    tool = mcp_call(asgi_server, tenant_a, committed_key(tenant_a, scopes="chat"), described)
    assert tool.description == "Answers questions about the office"
    assert tool.inputSchema["required"] == ["question"]


def test_an_agent_answers_through_its_tool_and_the_run_is_the_keys(
    asgi_server: dict,
    committed: Committed,
    committed_key: Any,
    fake_llm: FakeOpenAI,
    published_agent: Any,
    tenant_a: Tenant,
) -> None:
    # given
    published_agent(slug="helper", mode="chat")
    fake_llm.script(Reply(content="The office opens at nine."))
    key = committed_key(tenant_a, scopes="chat")

    async def ask(session: ClientSession) -> Any:
        return await session.call_tool("ask_helper", {"question": "When does the office open?"})

    # when
    result = mcp_call(asgi_server, tenant_a, key, ask)
    # then
    assert not result.isError, result.content
    assert result.content[0].text == "The office opens at nine."
    run = committed.run(tenant_a, lambda: AgentRun.objects.get(pk=result.meta["nexent/run_id"]))
    assert run.trigger == AgentRun.Trigger.API and run.user_email == "owner@alpha.test"
    assert run.input == [{"role": "user", "content": "When does the office open?"}]
    assert fake_llm.chat_requests()[-1]["messages"][-1]["content"] == "When does the office open?"

    # a tool beyond the key's scopes, or bad arguments, are refused
    async def refused(session: ClientSession) -> list[Any]:
        return [
            await session.call_tool("knowledge_search", {"query": "backups"}),
            await session.call_tool("ask_helper", {"question": 42}),
            await session.call_tool("ask_nobody", {"question": "hi"}),
        ]

    beyond, invalid, unknown = mcp_call(asgi_server, tenant_a, key, refused)
    assert beyond.isError and "knowledge:read" in beyond.content[0].text
    assert invalid.isError and "Invalid arguments" in invalid.content[0].text
    assert unknown.isError and "Unknown tool" in unknown.content[0].text


@pytest.mark.usefixtures("celery_worker")
def test_knowledge_search_finds_the_passages(
    asgi_server: dict, committed: Committed, committed_key: Any, make_kb: Any, published_agent: Any, tenant_a: Tenant
) -> None:
    # given a ready knowledge base (and an agent a knowledge reader may not ask)
    published_agent(slug="helper")
    kb = make_kb(slug="ops-manual", chunk_size=60, chunk_overlap=0)
    document = upload(committed, tenant_a, kb, "operations.md", MANUAL)
    wait_for_documents(committed, tenant_a, [document.pk])
    key = committed_key(tenant_a, scopes="knowledge:read")

    async def search(session: ClientSession) -> list[Any]:
        return [
            await session.call_tool(
                "knowledge_search", {"query": "quasar backup", "knowledge_bases": ["ops-manual"], "top_k": 2}
            ),
            await session.call_tool("knowledge_search", {"query": "backup", "knowledge_bases": ["nope"]}),
            await session.call_tool("ask_helper", {"question": "hi"}),
        ]

    # when
    found, unknown_base, beyond = mcp_call(asgi_server, tenant_a, key, search)
    # then
    assert not found.isError, found.content
    hits = found.structuredContent["hits"]
    assert 1 <= len(hits) <= 2
    assert hits[0]["document_id"] == document.pk and "quasar backup" in hits[0]["text"]
    assert hits[0]["knowledge_base"] == "ops-manual"
    assert unknown_base.isError and "nope" in unknown_base.content[0].text
    assert beyond.isError and "chat" in beyond.content[0].text


def test_requests_without_a_key_of_the_tenant_are_refused(
    asgi_server: dict, committed_key: Any, suspended_tenant: Tenant, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }

    def post(tenant: Tenant | str, key: str | None) -> httpx.Response:
        host = tenant if isinstance(tenant, str) else host_of(tenant)
        headers = {"Host": host, "Accept": "application/json, text/event-stream"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.post(f"http://127.0.0.1:{asgi_server['port']}/mcp/", json=initialize, headers=headers)

    # no key, a made-up key, B's key on A's domain: 401 with a Bearer challenge
    for key in (None, "nxk_bogus", committed_key(tenant_b, scopes="chat")):
        response = post(tenant_a, key)
        assert response.status_code == 401, response.text
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert response.json()["error"]["code"] in ("not_authenticated", "invalid_api_key")
    # a suspended organisation, an unknown host
    assert post(suspended_tenant, "nxk_any").status_code == 403
    assert post("nowhere.example.com", "nxk_any").status_code == 404
    # the same request with A's key works, within the key's rate limit (one a minute: of three, one at least
    # is refused, whenever the minute turns)
    limited = committed_key(tenant_a, scopes="chat", requests_per_minute=1)
    responses = [post(tenant_a, limited) for _ in range(3)]
    assert responses[0].status_code == 200 or responses[1].status_code == 200
    refused = [response for response in responses if response.status_code == 429]
    assert refused and 1 <= int(refused[0].headers["Retry-After"]) <= 60
    # and the client itself fails to connect without a key
    with pytest.raises(BaseException):  # noqa: B017  (the client raises an ExceptionGroup of HTTP errors)
        mcp_call(asgi_server, tenant_a, None, tool_names)
