"""Built-in tools: current date/time, a safe calculator, web fetch (with SSRF guard), knowledge search."""

from __future__ import annotations

import math
from datetime import datetime
from html.parser import HTMLParser
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import requests
import simpleeval
from django.conf import settings
from smolagents import Tool

from agents.tools.knowledge import knowledge_search_run
from agents.tools.netguard import BlockedURL, check_url
from agents.tools.registry import RunContext, ToolDefinition, register


class DateTimeTool(Tool):
    name = "current_datetime"
    description = "Returns the current date, time and weekday."
    inputs: dict = {}
    output_type = "string"

    def __init__(self, timezone: str) -> None:
        super().__init__()
        self.timezone = timezone

    def forward(self) -> str:
        now = datetime.now(ZoneInfo(self.timezone))
        return f"{now:%Y-%m-%d %H:%M:%S} {self.timezone} ({now:%A})"


_MATH = {name: getattr(math, name) for name in ("sqrt", "sin", "cos", "tan", "log", "log10", "exp", "floor", "ceil")}


class CalculatorTool(Tool):
    name = "calculator"
    description = (
        "Evaluates an arithmetic expression, e.g. '(3.5 + 2) * 4 / sqrt(16)'. "
        "Supports + - * / // % ** and math functions."
    )
    inputs = {"expression": {"type": "string", "description": "The arithmetic expression"}}
    output_type = "string"

    def forward(self, expression: str) -> str:
        if len(expression) > 500:
            return "Error: expression too long (500 characters at most)."
        evaluator = simpleeval.SimpleEval(functions={**_MATH, "abs": abs, "round": round, "min": min, "max": max})
        evaluator.names = {"pi": math.pi, "e": math.e}
        try:
            return str(evaluator.eval(expression))
        except (
            simpleeval.InvalidExpression,
            ZeroDivisionError,
            OverflowError,
            ValueError,
            TypeError,
            SyntaxError,
        ) as exc:
            return f"Error: {exc}"


class _TextExtractor(HTMLParser):
    SKIP = {"script", "style", "noscript", "template", "svg"}

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in self.SKIP:
            self._skipping += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping and data.strip():
            self.parts.append(data.strip())


class WebFetchTool(Tool):
    name = "web_fetch"
    description = "Fetches a public web page (HTTP GET) and returns its text."
    inputs = {"url": {"type": "string", "description": "An http(s) URL"}}
    output_type = "string"
    MAX_REDIRECTS = 3

    def __init__(self, max_bytes: int, timeout_s: float, allow_private: bool) -> None:
        super().__init__()
        self.max_bytes, self.timeout_s, self.allow_private = max_bytes, timeout_s, allow_private

    def forward(self, url: str) -> str:
        try:
            for _ in range(self.MAX_REDIRECTS + 1):
                check_url(url, allow_private=self.allow_private)  # checked again after every redirect
                with requests.get(
                    url,
                    stream=True,
                    timeout=self.timeout_s,
                    allow_redirects=False,
                    headers={"User-Agent": "Nexent/0.1"},
                ) as response:
                    if response.is_redirect and response.headers.get("Location"):
                        url = requests.compat.urljoin(url, response.headers["Location"])
                        continue
                    body = b""
                    for chunk in response.iter_content(16384):
                        body += chunk
                        if len(body) > self.max_bytes:
                            body = body[: self.max_bytes]
                            break
                    text = body.decode(response.encoding or "utf-8", errors="replace")
                    if "html" in response.headers.get("Content-Type", ""):
                        extractor = _TextExtractor()
                        extractor.feed(text)
                        text = "\n".join(extractor.parts)
                    return f"HTTP {response.status_code} {url}\n\n{text[:20000]}"
            return "Error: too many redirects."
        except BlockedURL as exc:
            return f"Error: {exc}"
        except requests.RequestException as exc:
            return f"Error: could not fetch {url}: {type(exc).__name__}"


class KnowledgeSearchTool(Tool):
    name = "knowledge_search"
    description = "Searches the organisation's knowledge bases and returns relevant passages with their sources."
    inputs = {"query": {"type": "string", "description": "What to look for"}}
    output_type = "string"

    def __init__(self, knowledge_bases: list[str], top_k: int, context: RunContext) -> None:
        super().__init__()
        self.knowledge_bases, self.top_k, self.context = knowledge_bases, top_k, context

    def forward(self, query: str) -> str:
        return knowledge_search_run(
            query=query, knowledge_bases=self.knowledge_bases, top_k=self.top_k, context=self.context
        )


register(
    ToolDefinition(
        key="datetime",
        label="Current date and time",
        description=DateTimeTool.description,
        config_schema={
            "type": "object",
            "properties": {"timezone": {"type": "string", "default": "UTC", "enum": sorted(available_timezones())}},
            "additionalProperties": False,
        },
        build=lambda config, context: DateTimeTool(config["timezone"]),
    )
)
register(
    ToolDefinition(
        key="calculator",
        label="Calculator",
        description=CalculatorTool.description,
        config_schema={"type": "object", "properties": {}, "additionalProperties": False},
        build=lambda config, context: CalculatorTool(),
    )
)
register(
    ToolDefinition(
        key="web_fetch",
        label="Web fetch",
        description=WebFetchTool.description,
        config_schema={
            "type": "object",
            "properties": {
                "max_bytes": {"type": "integer", "minimum": 1024, "maximum": 5_000_000, "default": 1_000_000},
                "timeout_s": {"type": "number", "minimum": 1, "maximum": 30, "default": 10},
            },
            "additionalProperties": False,
        },
        build=lambda config, context: WebFetchTool(
            config["max_bytes"], config["timeout_s"], settings.WEB_FETCH_ALLOW_PRIVATE or context.allow_private_urls
        ),
    )
)
register(
    ToolDefinition(
        key="knowledge_search",
        label="Knowledge search",
        description=KnowledgeSearchTool.description,
        config_schema={
            "type": "object",
            "properties": {
                "knowledge_bases": {"type": "array", "items": {"type": "string"}, "default": []},
                "top_k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 5},
            },
            "additionalProperties": False,
        },
        build=lambda config, context: KnowledgeSearchTool(config["knowledge_bases"], config["top_k"], context),
    )
)
