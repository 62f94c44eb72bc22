"""MCP servers as tool sources: discover their tools (admin action) and open them for a run."""

from __future__ import annotations

import warnings
from contextlib import ExitStack
from typing import Any

import requests
from django.conf import settings
from django.utils import timezone

from agents.models import ConnectionStatus, McpServer


def mcp_server_parameters(server: dict) -> dict[str, Any]:
    headers = dict(server.get("headers") or {})
    if server.get("token"):
        headers["Authorization"] = f"Bearer {server['token']}"
    return {"url": server["url"], "transport": server.get("transport", "streamable-http"), "headers": headers}


def mcp_server_as_dict(server: McpServer) -> dict[str, Any]:
    return {
        "id": server.pk,
        "name": server.name,
        "url": server.url,
        "transport": server.transport,
        "headers": server.headers,
        "token": server.token,
    }


def mcp_tools_open(server: dict, stack: ExitStack) -> list[Any]:
    """Connect to the server for the duration of `stack` and return its tools as smolagents tools."""
    from smolagents import MCPClient

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        client = MCPClient(
            mcp_server_parameters(server),
            adapter_kwargs={"connect_timeout": settings.MCP_CONNECT_TIMEOUT_S},
            structured_output=False,
        )
    stack.callback(client.disconnect)
    return list(client.get_tools())


def _http_diagnosis(server: dict) -> str | None:
    """The MCP client reports most failures as a timeout; one plain request tells what really happened."""
    params = mcp_server_parameters(server)
    headers = {**params["headers"], "Accept": "application/json, text/event-stream"}
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "nexent", "version": "1"},
        },
    }
    try:
        response = requests.post(params["url"], json=initialize, headers=headers, timeout=5)
    except requests.RequestException as exc:
        return f"cannot connect to {params['url']}: {type(exc).__name__}"
    if response.status_code in (401, 403):
        return f"authentication failed ({response.status_code}): check the token and headers"
    if response.status_code >= 400:
        return f"HTTP {response.status_code} from the MCP server at {params['url']}"
    return None


def mcp_server_discover(*, server: McpServer) -> McpServer:
    """Connect, list the server's tools, cache them on the record and store the connection status."""
    try:
        with ExitStack() as stack:
            tools = mcp_tools_open(mcp_server_as_dict(server), stack)
        server.tools = [{"name": tool.name, "description": tool.description, "inputs": tool.inputs} for tool in tools]
        server.tools_discovered_at = timezone.now()
        server.status, server.status_error = ConnectionStatus.AVAILABLE, ""
    except Exception as exc:  # any failure is reported on the record, with its reason
        server.status = ConnectionStatus.UNAVAILABLE
        server.status_error = _http_diagnosis(mcp_server_as_dict(server)) or f"{type(exc).__name__}: {str(exc)[:500]}"
    server.status_checked_at = timezone.now()
    server.save(update_fields=["tools", "tools_discovered_at", "status", "status_error", "status_checked_at"])
    return server
