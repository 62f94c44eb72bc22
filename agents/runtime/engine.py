"""Runs an agent spec on smolagents and reports what happens as protocol events through `emit`.

The engine knows nothing about Celery, Redis or the database: `agents.services.runs` gives it a spec,
the messages, resolved providers and an `emit(type, data, agent="")` callback that publishes and may
raise `RunStopped` when the run was cancelled or ran out of time.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from smolagents import ChatMessageStreamDelta, FinalAnswerStep, OpenAIModel, ToolCallingAgent
from smolagents.agents import ToolOutput
from smolagents.memory import ActionStep, ToolCall
from smolagents.monitoring import AgentLogger, LogLevel

from agents.runtime.events import EventType
from agents.runtime.token_estimate import messages_tokens_estimate, tokens_estimate
from agents.tools import RunContext, tool_definition
from agents.tools.knowledge import knowledge_search_run
from nexent_site.integrations.openai_compat import ProviderConfig, chat_stream, client_for, describe_error

logger = logging.getLogger(__name__)
Emit = Callable[..., None]
MAX_OBSERVATION_CHARS = 4000


class RunStopped(Exception):
    """Raised by `emit` when the run must stop: `status` is "cancelled" or "timed_out"."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class RunNotClaimed(RunStopped):
    """Raised by `on_start` when the run is not this worker's to execute after all (another took it, or it was
    cancelled while queued): nothing of it was published, and the caller leaves it as it is."""

    def __init__(self) -> None:
        super().__init__("not_claimed", "the run was no longer queued")


class RunFailed(Exception):
    def __init__(self, message: str, code: str = "run_failed") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class RunResult:
    output: str = ""
    tokens_in: int = 0
    tokens_out: int = 0
    usage_estimated: bool = False  # some model call reported no usage: its tokens are estimated (token_estimate)
    citations: list[dict] = field(default_factory=list)

    def add_usage(self, tokens_in: int, tokens_out: int, *, estimated: bool = False) -> None:
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out
        self.usage_estimated = self.usage_estimated or estimated

    def add_step_usage(self, step: ActionStep) -> None:
        """A smolagents step's model call: its reported usage, else an estimate from what it sent and got."""
        usage = step.token_usage
        if usage and (usage.input_tokens or usage.output_tokens):  # a stream without usage adds up to zeros
            self.add_usage(usage.input_tokens, usage.output_tokens)
        elif step.model_input_messages or step.model_output:
            output = step.model_output if isinstance(step.model_output, str) else str(step.model_output or "")
            calls = "".join(f"{call.name}{call.arguments}" for call in step.tool_calls or [])
            self.add_usage(
                messages_tokens_estimate(step.model_input_messages or []),
                tokens_estimate(output + calls),
                estimated=True,
            )


def system_prompt(spec: dict) -> str:
    parts = []
    instructions = spec.get("instructions", {})
    if instructions.get("role"):
        parts.append(instructions["role"].strip())
    if instructions.get("constraints"):
        parts.append("Constraints:\n" + instructions["constraints"].strip())
    if instructions.get("examples"):
        parts.append("Examples:\n" + instructions["examples"].strip())
    return "\n\n".join(parts) or f"You are {spec.get('name', 'a helpful assistant')}."


def _limit_kwargs(spec: dict) -> dict:
    """A caller's `max_tokens` (the OpenAI-compatible API's) for each model call, when it set one."""
    return {"max_tokens": spec["max_tokens"]} if spec.get("max_tokens") else {}


def _trim_history(messages: list[dict], context_window: int, reserve: int = 1024) -> list[dict]:
    """Keep the newest messages that fit the context window (about 4 characters per token)."""
    budget = max(context_window - reserve, 256) * 4
    kept: list[dict] = []
    for message in reversed(messages):
        size = len(str(message.get("content", "")))
        if kept and size > budget:
            break
        budget -= size
        kept.append(message)
    return list(reversed(kept))


def _quiet_logger() -> AgentLogger:
    # smolagents draws rich panels on stdout even at LogLevel.OFF when streaming; send them nowhere.
    return AgentLogger(level=LogLevel.OFF, console=Console(file=io.StringIO()))


def _text(value: Any, limit: int = MAX_OBSERVATION_CHARS) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + f"… ({len(text) - limit} more characters)"


class TextDeltas:
    """The answer's text as `text_delta` events: the first piece at once, later ones gathered and sent at most
    every `interval_s` seconds. Tokens faster than that make fewer, larger events (each costs the worker, Redis,
    the web process and the browser the same, whatever its size); slower ones go out as they come. Call `flush`
    before emitting any other event, and at the end: what is held goes out first."""

    def __init__(self, emit: Emit, interval_s: float) -> None:
        self.emit = emit
        self.interval_s = interval_s
        self._held: list[str] = []
        self._sent_at = float("-inf")

    def add(self, text: str) -> None:
        self._held.append(text)
        if time.monotonic() - self._sent_at >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        if self._held:
            text = "".join(self._held)
            self._held.clear()
            self._sent_at = time.monotonic()
            self.emit(EventType.TEXT_DELTA, {"text": text})


class Engine:
    def __init__(
        self,
        *,
        spec: dict,
        messages: list[dict],
        providers: dict[str, ProviderConfig],
        mcp_servers: dict[str, dict],
        context: RunContext,
        emit: Emit,
        text_delta_interval_s: float = 0.0,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        """`on_start` is called once, before the run's first event (the caller announces the run). A chat agent
        without knowledge searches has it called once its model request is sent, while the provider works on the
        answer: the announcement takes no time from the first token."""
        self.spec = spec
        self.messages = messages
        self.providers = providers
        self.mcp_servers = mcp_servers
        self.context = context
        self.emit = emit
        self.deltas = TextDeltas(emit, text_delta_interval_s)
        self.result = RunResult()
        self._agents: list[ToolCallingAgent] = []
        self.on_start = on_start
        self._announced = False

    # --- entry point -------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        if self.spec["mode"] != "chat" or self._searches():
            self._announce()
        if self.spec["mode"] == "chat":
            self._run_chat()
        else:
            self._run_tools()
        self.result.citations = self.context.citations
        return self.result

    def _announce(self) -> None:
        if not self._announced:
            self._announced = True
            if self.on_start is not None:
                self.on_start()

    def provider_for(self, spec: dict) -> ProviderConfig:
        key = str(spec.get("provider_id") or "default")
        try:
            return self.providers[key]
        except KeyError:
            raise RunFailed(f"agent {spec['slug']!r} has no chat provider configured", "no_provider") from None

    # --- chat mode: one streamed model call ------------------------------------------------------------
    def _run_chat(self) -> None:
        if self._announced:  # the knowledge searches' events follow the step's start; then the model is called
            provider = self.provider_for(self.spec)
            self.emit(EventType.STEP_STARTED, {"step": 1})
            messages = self._chat_messages()
            stream = chat_stream(provider, **self._chat_params(messages))
        else:  # announced, and the step started, while the model works on the request
            try:
                provider = self.provider_for(self.spec)
            except RunFailed:
                self._announce()
                raise
            messages = self._chat_messages()
            stream = chat_stream(provider, on_sent=self._step_started, **self._chat_params(messages))
        text: list[str] = []
        finished: str | None = None  # the provider's finish reason: "stop", "length" (its max_tokens), …
        reported = False
        chunks = 0
        try:
            for chunk in stream:
                self._step_started()  # done when the request went out, unless it could not be sent
                usage = chunk.get("usage")
                if usage:
                    reported = True
                    self.result.add_usage(usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0)
                choice = (chunk.get("choices") or [None])[0]
                if not choice:
                    continue
                if choice.get("finish_reason"):
                    finished = choice["finish_reason"]
                content = (choice.get("delta") or {}).get("content")
                if content:
                    chunks += 1
                    text.append(content)
                    self.deltas.add(content)
            self._step_started()  # an answer without a single chunk
            self.deltas.flush()
        except RunStopped:
            raise
        except Exception as exc:
            self._step_started()  # a request that could not be sent: the run is announced before its failure
            with suppress(RunStopped):
                self.deltas.flush()  # the words that came before the failure, to live readers too
            error = describe_error(exc, provider)
            raise RunFailed(f"model call failed: {error.message}", error.code) from None
        finally:
            stream.close()  # a stop mid-answer drops the model's connection
            self.result.output = "".join(text)
            if not reported and (chunks or finished):  # llama.cpp's server; a stop or failure before usage came
                self.result.add_usage(
                    messages_tokens_estimate(messages),
                    max(chunks, tokens_estimate(self.result.output)),
                    estimated=True,
                )
        if not finished:
            raise RunFailed(
                "malformed response from provider: the stream ended before the answer was finished", "malformed"
            )
        self.emit(
            EventType.FINAL_ANSWER,
            {"text": self.result.output, "citations": self.context.citations, "finish_reason": finished},
        )

    def _step_started(self) -> None:
        """Chat mode's run announced and its step started, once."""
        if not self._announced:
            self._announce()
            self.emit(EventType.STEP_STARTED, {"step": 1})

    def _chat_messages(self) -> list[dict]:
        """The system prompt (with the passages the knowledge searches found) and the history that fits."""
        prompt = system_prompt(self.spec)
        passages = self._retrieve()
        if passages:
            prompt += (
                "\n\nPassages from the organisation's knowledge bases, found for the user's last message. Answer "
                "from them when they are relevant, and cite them by their [number]:\n\n" + passages
            )
        window = (self.spec.get("context_window") or 8192) - len(prompt) // 4  # what the history may use
        return [{"role": "system", "content": prompt}, *_trim_history(self.messages, window)]

    def _chat_params(self, messages: list[dict]) -> dict:
        return {
            "messages": messages,
            "temperature": self.spec.get("temperature", 0.3),
            **_limit_kwargs(self.spec),
            "stream_options": {"include_usage": True},
        }

    def _searches(self) -> list[dict]:
        return [tool for tool in self.spec.get("tools", []) if tool.get("tool") == "knowledge_search"]

    def _retrieve(self) -> str:
        """Chat mode's retrieved context: the agent's knowledge searches, run on the user's last message before
        the model is called, as tool call and result events (their hits become the answer's citations). A search
        that fails is reported as a step error and the answer goes on without it."""
        searches = self._searches()
        query = next((m["content"] for m in reversed(self.messages) if m.get("role") == "user"), "").strip()
        if not searches or not query:
            return ""
        found = []
        for number, tool in enumerate(searches, start=1):
            config = tool["config"]  # validated, with its defaults, when the tool was added (as tools mode reads it)
            call = {"id": f"retrieval-{number}", "name": "knowledge_search"}
            self.emit(EventType.TOOL_CALL, {**call, "arguments": {"query": query}})
            cited = len(self.context.citations)
            try:
                output = knowledge_search_run(
                    query=query, knowledge_bases=config["knowledge_bases"], top_k=config["top_k"], context=self.context
                )
            except Exception as exc:
                logger.warning("knowledge search failed in run %s", self.context.run_id, exc_info=True)
                self.emit(
                    EventType.ERROR,
                    {"code": "step_error", "fatal": False, "message": f"knowledge search failed: {str(exc)[:300]}"},
                )
                continue
            self.emit(EventType.TOOL_RESULT, {**call, "output": _text(output)})
            if len(self.context.citations) > cited:  # it found passages
                found.append(output)
        return "\n\n".join(found)

    # --- tools mode: smolagents ToolCallingAgent ---------------------------------------------------------
    def _run_tools(self) -> None:
        with ExitStack() as stack:
            agent = self._build_agent(self.spec, stack, path="")
            task = self._task_text()
            try:
                for item in agent.run(task, stream=True, reset=True):
                    self._on_parent_event(item)
                self.deltas.flush()
            except RunStopped:
                for each in self._agents:
                    each.interrupt()
                raise
            except RunFailed:
                raise
            except Exception as exc:
                raise RunFailed(self._explain(exc), "agent_error") from None
        if not self.result.output and agent.memory.steps:
            last = agent.memory.steps[-1]
            if isinstance(last, ActionStep) and last.error:
                raise RunFailed(self._explain(last.error), "agent_error")

    def _task_text(self) -> str:
        history = _trim_history(self.messages, self.spec.get("context_window") or 8192)
        if not history:
            raise RunFailed("no message to answer", "empty_input")
        *earlier, last = history
        if not earlier:
            return str(last.get("content", ""))
        transcript = "\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in earlier)
        return f"Conversation so far:\n{transcript}\n\nNow answer the user's latest message:\n{last.get('content', '')}"

    def _explain(self, exc: BaseException) -> str:
        cause: BaseException | None = exc
        while cause is not None:  # smolagents wraps model errors in AgentGenerationError
            if type(cause).__module__.startswith("openai"):
                provider = self.provider_for(self.spec)
                return f"model call failed: {describe_error(cause, provider).message}"
            cause = cause.__cause__ or cause.__context__
        return f"{type(exc).__name__}: {str(exc)[:500]}"

    def _build_agent(self, spec: dict, stack: ExitStack, path: str) -> ToolCallingAgent:
        provider = self.provider_for(spec)
        model = OpenAIModel(
            model_id=provider.model,
            client=client_for(provider),
            temperature=spec.get("temperature", 0.3),
            tool_choice=provider.tool_choice,
            **_limit_kwargs(spec),
            # plain-text message content: accepted by every OpenAI-compatible server (llama.cpp refuses parts)
            flatten_messages_as_text=True,
        )
        tools = [self._build_tool(tool, stack) for tool in spec.get("tools", [])]
        tools = [tool for group in tools for tool in (group if isinstance(group, list) else [group])]
        child_path = f"{path}/{spec['slug']}" if path else spec["slug"]
        managed = [self._build_agent(child, stack, child_path) for child in spec.get("sub_agents", [])]
        agent = ToolCallingAgent(
            tools=tools,
            model=model,
            managed_agents=managed or None,
            max_steps=spec.get("max_steps", 6),
            instructions=system_prompt(spec),
            # sub-agents report whole steps through the callback below
            stream_outputs=not path and provider.stream_tool_calls,
            logger=_quiet_logger(),
            name=spec["slug"].replace("-", "_") if path else None,
            description=spec.get("description") or spec.get("name") if path else None,
            step_callbacks={ActionStep: self._subagent_callback(child_path)} if path else None,
        )
        self._agents.append(agent)
        return agent

    def _build_tool(self, tool_spec: dict, stack: ExitStack) -> Any:
        if tool_spec["tool"] != "mcp":
            return tool_definition(tool_spec["tool"]).build(tool_spec.get("config", {}), self.context)
        server = self.mcp_servers.get(str(tool_spec["server_id"]))
        if server is None:
            raise RunFailed(f"MCP server {tool_spec.get('server')!r} no longer exists", "mcp_missing")
        from agents.services.mcp import mcp_tools_open

        tools = mcp_tools_open(server, stack)
        wanted = [tool for tool in tools if tool.name == tool_spec["name"]]
        if not wanted:
            raise RunFailed(
                f"MCP server {server['name']!r} no longer offers the tool {tool_spec['name']!r}", "mcp_tool"
            )
        return wanted

    def _subagent_callback(self, path: str) -> Callable[..., None]:
        def callback(step: ActionStep, agent: Any = None) -> None:
            self.result.add_step_usage(step)
            self.emit(
                EventType.SUBAGENT_EVENT,
                {
                    "step": step.step_number,
                    "model_output": _text(step.model_output or ""),
                    "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in step.tool_calls or []],
                    "observations": _text(step.observations or ""),
                    "error": str(step.error) if step.error else None,
                    "final_answer": _text(step.action_output if step.action_output is not None else step.observations)
                    if step.is_final_answer
                    else None,
                },
                agent=path,
            )

        return callback

    def _on_parent_event(self, item: Any) -> None:
        if isinstance(item, ChatMessageStreamDelta):
            self._start_step_once()
            if item.content:
                self.deltas.add(item.content)
            return
        self.deltas.flush()  # the text so far comes before whatever this is
        if isinstance(item, ToolCall):
            self._start_step_once()
            if item.name != "final_answer":
                self.emit(EventType.TOOL_CALL, {"id": item.id, "name": item.name, "arguments": item.arguments})
        elif isinstance(item, ToolOutput):
            if not item.is_final_answer:
                self.emit(
                    EventType.TOOL_RESULT,
                    {"id": item.id, "name": item.tool_call.name, "output": _text(item.observation)},
                )
        elif isinstance(item, ActionStep):
            self.result.add_step_usage(item)  # streamed or not, each step carries its model call's usage
            if item.error:
                self.emit(
                    EventType.ERROR, {"message": _text(str(item.error), 1000), "code": "step_error", "fatal": False}
                )
            self._step_open = False
        elif isinstance(item, FinalAnswerStep):
            self.result.output = _text(item.output, 100_000)
            self.emit(EventType.FINAL_ANSWER, {"text": self.result.output, "citations": self.context.citations})

    _step_open = False
    _step_number = 0

    def _start_step_once(self) -> None:
        if not self._step_open:
            self._step_open = True
            self._step_number += 1
            self.emit(EventType.STEP_STARTED, {"step": self._step_number})
