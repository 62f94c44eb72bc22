"""MCP servers as tool sources, against a real MCP server (the `mcp` package's FastMCP over streamable
HTTP, served by uvicorn on loopback) that stands in for an external one."""

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from django.test import override_settings
from django_tenants.utils import tenant_context
from mcp.server.fastmcp import FastMCP

from agents.models import Agent, McpServer
from agents.runtime.streams import run_events_follow
from agents.services.agents import agent_publish, agent_tool_add
from agents.services.mcp import mcp_server_discover
from agents.services.runs import run_start
from agents.tests.fixtures import make_provider
from conftest import Committed
from nexent_site.testing.fake_openai import FakeOpenAI, Reply, ToolCallSpec
from tenants.models import Tenant

TOKEN = "mcp-secret-token"


def _require_token(app: Any) -> Any:
    async def guarded(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and (b"authorization", f"Bearer {TOKEN}".encode()) not in scope["headers"]:
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"unauthorized"})
            return
        await app(scope, receive, send)

    return guarded


@pytest.fixture(scope="module")
def mcp_url() -> Iterator[str]:
    server = FastMCP("test-tools")

    @server.tool()
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uv = uvicorn.Server(
        uvicorn.Config(
            _require_token(server.streamable_http_app()),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
        )
    )
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/mcp"
    uv.should_exit = True
    thread.join(10)


@pytest.mark.django_db
def test_discovery_caches_the_tools_and_status(tenant_a: Tenant, mcp_url: str) -> None:
    with tenant_context(tenant_a):
        server = McpServer.objects.create(name="tools", url=mcp_url, token=TOKEN)
        mcp_server_discover(server=server)
        assert server.status == "available", server.status_error
        assert [t["name"] for t in server.tools] == ["shout"]
        assert server.tools[0]["description"] == "Upper-case the text."


@pytest.mark.django_db
@override_settings(MCP_CONNECT_TIMEOUT_S=2)
# mcpadapt's connection thread dies with the 401 it received; that is the behaviour under test
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_wrong_token_marks_the_server_unavailable(tenant_a: Tenant, mcp_url: str) -> None:
    with tenant_context(tenant_a):
        server = McpServer.objects.create(name="tools", url=mcp_url, token="wrong")
        mcp_server_discover(server=server)
        assert server.status == "unavailable"
        assert server.status_error == "authentication failed (401): check the token and headers"
        assert server.tools == []


@pytest.mark.django_db
@pytest.mark.usefixtures("celery_worker")
def test_an_agent_calls_an_mcp_tool(committed: Committed, fake_llm: FakeOpenAI, tenant_a: Tenant, mcp_url: str) -> None:
    def create() -> Any:
        server = McpServer.objects.create(name="tools", url=mcp_url, token=TOKEN)
        mcp_server_discover(server=server)
        agent = Agent.objects.create(
            name="Mcp", slug="mcp-user", chat_provider=make_provider(fake_llm, name="Fake mcp")
        )
        agent_tool_add(agent=agent, tool="mcp", mcp_server=server, mcp_tool_name="shout")
        agent_publish(agent=agent)
        return run_start(agent=agent, messages="shout hi", trigger="api")

    def remove() -> None:
        Agent.objects.filter(slug="mcp-user").delete()
        McpServer.objects.filter(name="tools").delete()

    committed.on_teardown(tenant_a, remove)
    fake_llm.script(
        Reply(tool_calls=[ToolCallSpec("shout", {"text": "hi there"})]),
        Reply(tool_calls=[ToolCallSpec("final_answer", {"answer": "HI THERE"})]),
    )
    run = committed.run(tenant_a, create)
    events = list(run_events_follow(tenant_a.schema_name, str(run.id), timeout_s=60))

    assert events[-1]["data"]["status"] == "succeeded", events[-1]
    result = next(e for e in events if e["type"] == "tool_result")["data"]
    assert (result["name"], result["output"]) == ("shout", "HI THERE")


@pytest.mark.django_db
def test_mcp_servers_of_tenant_b_are_not_usable_from_a(tenant_a: Tenant, tenant_b: Tenant, mcp_url: str) -> None:
    with tenant_context(tenant_b):
        b_server = McpServer.objects.create(name="b-tools", url=mcp_url, token=TOKEN, tools=[{"name": "shout"}])
    with tenant_context(tenant_a):
        assert not McpServer.objects.filter(name="b-tools").exists()
        assert (
            McpServer.objects.filter(pk=b_server.pk).first() is None
            or McpServer.objects.get(pk=b_server.pk).name != "b-tools"
        )
