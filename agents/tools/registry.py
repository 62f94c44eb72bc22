from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema
from django.core.exceptions import ValidationError
from smolagents import Tool


@dataclass
class RunContext:
    """What a tool may know about the run it serves."""

    schema_name: str
    run_id: str
    allow_private_urls: bool = False
    citations: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class ToolDefinition:
    key: str
    label: str
    description: str
    config_schema: dict
    build: Callable[[dict, RunContext], Tool]

    def default_config(self) -> dict:
        return {
            name: prop["default"]
            for name, prop in self.config_schema.get("properties", {}).items()
            if "default" in prop
        }


TOOLS: dict[str, ToolDefinition] = {}


def register(definition: ToolDefinition) -> ToolDefinition:
    TOOLS[definition.key] = definition
    return definition


def tool_definition(key: str) -> ToolDefinition:
    from agents.tools import builtin  # noqa: F401  (registers the built-in tools)

    try:
        return TOOLS[key]
    except KeyError:
        raise ValidationError(
            {"tool": [f"Unknown tool {key!r}; choose one of {', '.join(sorted(TOOLS))} or 'mcp'."]}
        ) from None


def tool_config_validate(key: str, config: Any) -> dict:
    """The config with defaults filled in, or ValidationError({"config": [...]}) naming each problem."""
    definition = tool_definition(key)
    if not isinstance(config, dict):
        raise ValidationError({"config": ["Tool settings must be a JSON object."]})
    merged = {**definition.default_config(), **config}
    validator = jsonschema.Draft202012Validator(definition.config_schema)
    problems = sorted(validator.iter_errors(merged), key=lambda e: list(e.path))
    if problems:
        messages = [f"{'/'.join(str(p) for p in problem.path) or key}: {problem.message}" for problem in problems]
        raise ValidationError({"config": messages})
    return merged
