"""The MCP server at /mcp/ on every tenant domain (streamable HTTP, stateless), so that MCP clients (desktop
assistants, IDEs, other agents) can use an organisation's agents and knowledge:

- `ask_<agent slug>`: ask a published agent a question, get its answer (needs the `chat` scope);
- `knowledge_search`: the passages of the organisation's knowledge bases that best match a query, with
  their document, page and scores (needs `knowledge:read`).

Clients authenticate with an API key (`Authorization: Bearer nxk_…`); the tenant is the one whose domain
is in the Host header, and a key of another tenant is unknown there. `tools/list` shows what the key's
scopes allow, and calling anything else is refused. Each HTTP request counts against the key's rate limits.

nexent_site/asgi.py routes /mcp to `mcp_application`. The web server runs no ASGI lifespan (Django has none; the
Procfile says `--lifespan off`), so the SDK's session
manager (whose task group hosts each request's server task) starts with the first request, once per event
loop."""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import jsonschema
from channels.db import database_sync_to_async
from django.core.exceptions import ValidationError
from django_tenants.utils import get_public_schema_name
from mcp import types
from mcp.server.lowlevel import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.datastructures import Headers

from agents.models import RunStatus
from api.agent_calls import agent_call_start, agent_get_callable, agents_callable, run_wait
from api.authentication import raw_key_from
from api.errors import error_body
from api.models import ApiKey
from api.scopes import Scope
from api.services import KEY_PREFIX, apikey_authenticate, apikey_scopes
from api.throttling import rate_limit_hit
from knowledge.models import KnowledgeBase
from knowledge.services.search import knowledge_search
from nexent_site.errors import ApplicationError
from nexent_site.tenancy import run_in_tenant, tenant_for_host

logger = logging.getLogger(__name__)

AGENT_TOOL_PREFIX = "ask_"
KNOWLEDGE_TOOL = "knowledge_search"
RUN_ID_META = "nexent/run_id"
MAX_TOP_K = 50
ASGI = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


@dataclass(frozen=True)
class McpCaller:
    """Who is calling, as the auth middleware found it (kept in the ASGI scope under "nexent")."""

    tenant: Any
    key: ApiKey
    scopes: frozenset[str]


@dataclass(frozen=True)
class ToolEntry:
    tool: types.Tool
    scope: str
    agent_slug: str = ""


# --- tools ---------------------------------------------------------------------------------------------
def _tool_entries() -> list[ToolEntry]:
    """Every tool of the current tenant, with the scope it needs."""
    entries = []
    for agent in agents_callable():
        spec = agent.published_version.spec
        entries.append(
            ToolEntry(
                tool=types.Tool(
                    name=f"{AGENT_TOOL_PREFIX}{agent.slug}",
                    title=spec.get("name") or agent.name,
                    description=spec.get("description") or f"Ask the agent “{agent.name}” and get its answer.",
                    inputSchema={
                        "type": "object",
                        "properties": {
                            "question": {"type": "string", "minLength": 1, "description": "What to ask the agent"}
                        },
                        "required": ["question"],
                        "additionalProperties": False,
                    },
                ),
                scope=Scope.CHAT,
                agent_slug=agent.slug,
            )
        )
    bases = list(KnowledgeBase.objects.order_by("slug").values_list("slug", "name"))
    listed = ", ".join(f"{slug} ({name})" for slug, name in bases) or "none yet"
    entries.append(
        ToolEntry(
            tool=types.Tool(
                name=KNOWLEDGE_TOOL,
                title="Search the knowledge bases",
                description="Search the organisation's knowledge bases: the passages that best match the query, "
                f"with their document, page and relevance score. Knowledge bases: {listed}.",
                inputSchema={
                    "type": "object",
                    "properties": {
                        "query": {"type": "string", "minLength": 1, "description": "What to look for"},
                        "knowledge_bases": {
                            "type": "array",
                            "items": {"type": "string"},
                            "description": "Slugs of the knowledge bases to search (default: all of them)",
                        },
                        "top_k": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": MAX_TOP_K,
                            "description": "How many passages to return (default: each knowledge base's own)",
                        },
                    },
                    "required": ["query"],
                    "additionalProperties": False,
                },
            ),
            scope=Scope.KNOWLEDGE_READ,
        )
    )
    return entries


def _knowledge_search(*, query: str, knowledge_bases: list[str] | None = None, top_k: int | None = None) -> dict:
    bases = KnowledgeBase.objects.select_related("embedding_provider").order_by("slug")
    if knowledge_bases:
        bases = bases.filter(slug__in=knowledge_bases)
        missing = sorted(set(knowledge_bases) - {kb.slug for kb in bases})
        if missing:
            raise ApplicationError(f"No knowledge base {', '.join(missing)} here.", code="not_found", status=404)
    result = knowledge_search(knowledge_bases=list(bases), query=query, top_k=top_k)
    return {"hits": [hit.as_dict() for hit in result.hits], "mode": result.mode, "warnings": result.warnings}


class TenantMcpServer(Server):
    """The SDK's low-level server. Its process-wide cache of tool definitions (filled by whichever tenant
    listed its tools last) is not used: tools differ per tenant and per key, so each call looks its tool
    up for the caller and checks the arguments against that definition itself."""

    async def _get_cached_tool_definition(self, tool_name: str) -> types.Tool | None:
        return None


mcp_server = TenantMcpServer(
    "nexent",
    instructions="The agents and knowledge bases of one Nexent organisation. Ask an agent with its ask_<agent> "
    "tool; search documents with knowledge_search.",
)


def _caller() -> McpCaller:
    return mcp_server.request_context.request.scope["nexent"]


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], isError=True)


@mcp_server.list_tools()
async def list_tools() -> list[types.Tool]:
    caller = _caller()
    entries = await run_in_tenant(caller.tenant, _tool_entries)
    return [entry.tool for entry in entries if entry.scope in caller.scopes]


@mcp_server.call_tool(validate_input=False)
async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult | dict:
    caller = _caller()
    entries = await run_in_tenant(caller.tenant, _tool_entries)
    entry = next((entry for entry in entries if entry.tool.name == name), None)
    if entry is None:
        return _error(f"Unknown tool: {name}.")
    if entry.scope not in caller.scopes:
        return _error(f"The tool {name} needs the “{entry.scope}” scope, which this API key does not have.")
    try:
        jsonschema.validate(arguments, entry.tool.inputSchema)
    except jsonschema.ValidationError as exc:
        return _error(f"Invalid arguments for {name}: {exc.message}")
    try:
        if entry.agent_slug:
            return await _ask_agent(caller, entry.agent_slug, arguments["question"])
        return await run_in_tenant(caller.tenant, _knowledge_search, **arguments)
    except ApplicationError as exc:
        return _error(exc.message)
    except ValidationError as exc:
        return _error(" ".join(exc.messages))


async def _ask_agent(caller: McpCaller, slug: str, question: str) -> types.CallToolResult:
    def start() -> Any:
        agent = agent_get_callable(slug=slug)
        if agent is None:
            raise ApplicationError(f"The agent {slug} is no longer published.", code="not_found", status=404)
        return agent_call_start(key=caller.key, agent=agent, messages=[{"role": "user", "content": question}])

    run = await run_wait(caller.tenant, await run_in_tenant(caller.tenant, start))
    if run.status != RunStatus.SUCCEEDED:
        return _error(f"The agent's run ended {run.status}: {run.error or 'no answer'}")
    # the answer is the content; the run (for support and the usage pages) rides along in _meta
    return types.CallToolResult.model_validate(
        {"content": [{"type": "text", "text": run.output}], "_meta": {RUN_ID_META: str(run.pk)}}
    )


# --- HTTP ----------------------------------------------------------------------------------------------
class LazySessionManager:
    """The SDK's stateless session manager, started on the first request of each event loop (a manager
    runs once, and its task group belongs to one loop)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._managers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple] = weakref.WeakKeyDictionary()
        self._tasks: set[asyncio.Task] = set()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        manager = await self._running_manager()
        await manager.handle_request(scope, receive, send)

    async def _running_manager(self) -> StreamableHTTPSessionManager:
        loop = asyncio.get_running_loop()
        if loop not in self._managers:
            manager = StreamableHTTPSessionManager(app=self.server, stateless=True)
            ready = loop.create_future()
            self._managers[loop] = (manager, ready)
            task = loop.create_task(self._run(loop, manager, ready), name="mcp-session-manager")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        manager, ready = self._managers[loop]
        await asyncio.shield(ready)  # a cancelled request must not cancel the start others wait for
        return manager

    async def _run(
        self, loop: asyncio.AbstractEventLoop, manager: StreamableHTTPSessionManager, ready: asyncio.Future
    ) -> None:
        try:
            async with manager.run():
                ready.set_result(None)
                await asyncio.Event().wait()
        except BaseException as exc:
            if isinstance(exc, Exception):
                logger.exception("the MCP session manager stopped")
            self._managers.pop(loop, None)  # the next request starts a new one
            if not ready.done():
                ready.set_exception(exc)
            raise


def _authenticate(tenant: Any, raw: str) -> tuple[ApiKey, frozenset[str], int | None]:
    key = apikey_authenticate(raw)
    return key, apikey_scopes(key), rate_limit_hit(tenant, key)


async def _refuse(send: Callable, status: int, code: str, message: str, headers: dict | None = None) -> None:
    body = json.dumps(error_body(code, message)).encode()
    raw_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw_headers += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


class McpAuthMiddleware:
    """Before the MCP app: the tenant from the Host header (unknown hosts 404, suspended tenants 403), an
    API key of that tenant (401 otherwise, with the reason), and the key's rate limits (429)."""

    def __init__(self, app: ASGI) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        headers = Headers(scope=scope)
        tenant = await database_sync_to_async(tenant_for_host, thread_sensitive=False)(headers.get("host", ""))
        if tenant is None or tenant.schema_name == get_public_schema_name():
            return await _refuse(send, 404, "unknown_host", "No organisation is served at this address.")
        if not tenant.is_active:
            message = f"The organisation “{tenant.name}” is suspended. Contact the platform administrator."
            return await _refuse(send, 403, "tenant_suspended", message)
        challenge = {"WWW-Authenticate": f'Bearer realm="mcp", key_prefix="{KEY_PREFIX}"'}
        raw = raw_key_from(headers)
        if not raw:
            message = "Send an API key: Authorization: Bearer nxk_… (create one in the admin, under API keys)."
            return await _refuse(send, 401, "not_authenticated", message, challenge)
        try:
            key, scopes, wait = await run_in_tenant(tenant, _authenticate, tenant, raw)
        except ApplicationError as exc:
            return await _refuse(send, exc.status, exc.code, exc.message, challenge)
        if wait is not None:
            message = f"Too many requests; try again in {wait} s."
            return await _refuse(send, 429, "rate_limited", message, {"Retry-After": str(wait)})
        await self.app({**scope, "nexent": McpCaller(tenant=tenant, key=key, scopes=scopes)}, receive, send)


mcp_application = McpAuthMiddleware(LazySessionManager(mcp_server))


def is_mcp_path(path: str) -> bool:
    return path == "/mcp" or path.startswith("/mcp/")
