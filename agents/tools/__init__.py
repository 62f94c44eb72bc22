"""Built-in tools and the registry that validates their settings and builds them for a run."""

from agents.tools.registry import TOOLS, RunContext, ToolDefinition, tool_config_validate, tool_definition

__all__ = ["TOOLS", "RunContext", "ToolDefinition", "tool_config_validate", "tool_definition"]
