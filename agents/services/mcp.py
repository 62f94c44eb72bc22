"""MCP servers as tool sources: discover their tools (admin action) and open them for a run."""

from __future__ import annotations

import warnings
from contextlib import ExitStack
from typing import Any

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
        server.status_error = f"{type(exc).__name__}: {str(exc)[:500]}"
    server.status_checked_at = timezone.now()
    server.save(update_fields=["tools", "tools_discovered_at", "status", "status_error", "status_checked_at"])
    return server
