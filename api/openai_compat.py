"""OpenAI's chat-completions protocol over agent runs, so that OpenAI clients and SDKs work unchanged: the
agents are the models (`model` is an agent's slug), a request becomes a run of that agent, and the run's
events become a `chat.completion` or a stream of `chat.completion.chunk`s. Every failure is answered as an
OpenAI error, `{"error": {"message", "type", "param", "code"}}`, translated in one place
(`openai_error_from`).

What changes the run: `messages` (system, developer, user and assistant; text content, as a string or text
parts), `temperature`, `max_tokens` / `max_completion_tokens`, `user` (recorded as the run's end user),
`stream` and `stream_options.include_usage`. Parameters that only tune sampling or bookkeeping (`top_p`,
`stop`, `seed`, `n: 1`, …) are accepted and ignored, so existing clients work; what an agent cannot honour
(`n` > 1, tools and function calling, images and audio, structured output, logprobs) is refused with a 400
naming the parameter, as is any parameter OpenAI's API does not have."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import RequestDataTooBig, ValidationError

from agents.models import Agent, AgentRun, RunStatus
from agents.services.usage import QuotaExceeded
from api.agent_calls import agent_call_start, agent_get_callable, run_follow
from api.authentication import raw_key_from
from api.idempotency import idempotency_claim
from api.models import ApiKey, IdempotentRequest
from api.services import KEY_PREFIX, apikey_authenticate, apikey_scopes
from api.throttling import rate_limit_hit
from nexent_site.errors import ApplicationError

logger = logging.getLogger(__name__)

MAX_TEMPERATURE = 2.0
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
HANDLED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "max_tokens",
        "max_completion_tokens",
        "user",
        "n",
        "logprobs",
        "response_format",
        "modalities",
        "tool_choice",
    }
)
# OpenAI parameters that only tune sampling or bookkeeping: accepted, and ignored.
IGNORED = frozenset(
    {
        "frequency_penalty",
        "presence_penalty",
        "top_p",
        "stop",
        "seed",
        "logit_bias",
        "top_logprobs",
        "metadata",
        "store",
        "service_tier",
        "prompt_cache_key",
        "prompt_cache_retention",
        "safety_identifier",
        "reasoning_effort",
        "verbosity",
        "parallel_tool_calls",
        "prediction",
    }
)
NO_TOOLS = "Tools and function calling are not supported: each agent uses the tools it was given."
REFUSED = {
    "tools": NO_TOOLS,
    "functions": NO_TOOLS,
    "function_call": NO_TOOLS,
    "audio": "Audio output is not supported; agents answer in text.",
    "web_search_options": "Web search options are not supported; agents use the tools they were given.",
}
STOP, LENGTH = "stop", "length"


class OpenAIError(Exception):
    """A failure as OpenAI reports it: HTTP status, message, type, the parameter at fault and a code."""

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.type, self.param, self.code = message, status, type, param, code
        self.headers = dict(headers or {})

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _invalid(message: str, param: str | None, code: str = "invalid_value") -> OpenAIError:
    return OpenAIError(message, param=param, code=code)


def openai_error_from(exc: BaseException) -> OpenAIError:
    """Any failure of a /v1 request as the OpenAI error clients expect (status, type, code, headers)."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, QuotaExceeded):
        return OpenAIError(
            f"{exc.message} Try again next month or ask an administrator to raise the budget.",
            status=429,
            type="insufficient_quota",
            code="insufficient_quota",
            # retrying within the month cannot succeed
            headers={"Retry-After": str(exc.retry_after), "x-should-retry": "false"},
        )
    if isinstance(exc, ValidationError):
        if hasattr(exc, "error_dict"):
            param, messages = next(iter(exc.message_dict.items()))
            return _invalid(" ".join(messages), None if param == "__all__" else param)
        return _invalid(" ".join(exc.messages), None)
    if isinstance(exc, RequestDataTooBig):
        return OpenAIError("The request body is too large.", status=413, code="request_too_large")
    if isinstance(exc, ApplicationError):
        if exc.status == 401:
            return OpenAIError(
                exc.message,
                status=401,
                code="invalid_api_key",
                headers={"WWW-Authenticate": f'Bearer realm="api", key_prefix="{KEY_PREFIX}"'},
            )
        if exc.status >= 500:
            return OpenAIError(exc.message, status=exc.status, type="server_error", code=exc.code)
        return OpenAIError(exc.message, status=exc.status, code=exc.code)
    logger.exception("unexpected failure of an OpenAI-compatible request", exc_info=exc)
    return OpenAIError(
        "The server had an error while processing your request.", status=500, type="server_error", code=None
    )


def run_failure_error(*, status: str, error: str) -> OpenAIError:
    """Why a run did not succeed, as the error of its request: 502 when the agent's model provider failed
    (worth retrying), otherwise 500 (504 for a timeout) that clients are told not to retry."""
    reason = error or status
    if reason.startswith("model call failed"):  # how the engine reports provider failures
        return OpenAIError(f"The agent's model failed: {reason}", status=502, type="api_error", code="model_error")
    http_status, code = {
        RunStatus.TIMED_OUT: (504, "timeout"),
        RunStatus.CANCELLED: (500, "run_cancelled"),
    }.get(status, (500, "run_failed"))
    return OpenAIError(
        f"The agent's run ended {status}: {reason}",
        status=http_status,
        type="server_error",
        code=code,
        headers={"x-should-retry": "false"},
    )


# --- who is calling ------------------------------------------------------------------------------------
def openai_caller(*, tenant: Any, headers: Mapping[str, str], scope: str) -> ApiKey:
    """The caller's API key (in the current tenant's schema), once it has `scope` and is within its rate
    limits; OpenAIError (401, 403 or 429) otherwise."""
    raw = raw_key_from(headers)
    if not raw:
        raise ApplicationError(
            "You didn't provide an API key. Send it as `Authorization: Bearer nxk_…` "
            "(create one in your organisation's admin, under API keys).",
            code="missing_api_key",
            status=401,
        )
    key = apikey_authenticate(raw)
    if scope not in apikey_scopes(key):
        raise OpenAIError(f"This API key lacks the “{scope}” scope.", status=403, code="missing_scope")
    wait = rate_limit_hit(tenant, key)
    if wait is not None:
        raise OpenAIError(
            f"Rate limit reached for this API key or organisation; try again in {wait} s.",
            status=429,
            type="rate_limit_exceeded",
            code="rate_limit_exceeded",
            headers={"Retry-After": str(wait)},
        )
    return key


# --- models --------------------------------------------------------------------------------------------
def model_object(agent: Agent, *, owned_by: str) -> dict:
    published = agent.published_version.created_at if agent.published_version else agent.created_at
    return {"id": agent.slug, "object": "model", "created": int(published.timestamp()), "owned_by": owned_by}


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        f"The model `{model}` does not exist or you do not have access to it.", status=404, code="model_not_found"
    )


# --- the request ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: list[dict]
    stream: bool = False
    include_usage: bool = False
    temperature: float | None = None
    max_tokens: int | None = None
    user: str = ""

    @property
    def overrides(self) -> dict:
        return {"temperature": self.temperature, "max_tokens": self.max_tokens}


def chat_request_parse(*, body: bytes, content_type: str) -> ChatRequest:
    """The request body as a ChatRequest; OpenAIError (400) naming the parameter at fault otherwise."""
    if content_type != "application/json":
        raise _invalid(
            "Send the request body as JSON, with the header `Content-Type: application/json`.",
            None,
            "invalid_content_type",
        )
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _invalid(
            "We could not parse the JSON body of your request. Send a JSON object.", None, "invalid_json"
        ) from None
    if not isinstance(data, dict):
        raise _invalid("The request body must be a JSON object.", None, "invalid_json")
    # null means "not given", as in OpenAI's API
    data = {name: value for name, value in data.items() if value is not None}
    for name in data:
        if name in REFUSED:
            raise _invalid(REFUSED[name], name, "unsupported_parameter")
        if name not in HANDLED and name not in IGNORED:
            raise _invalid(f"Unrecognized request argument supplied: {name}", name, "unknown_parameter")
    _refuse_unsupported_values(data)

    model = data.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _invalid(
            "You must provide a model parameter (an agent's id, see /v1/models).", "model", "missing_required_parameter"
        )
    stream = _typed(data, "stream", bool, False)
    options = data.get("stream_options")
    if options is not None and not stream:
        raise _invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.", "stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid("stream_options must be an object.", "stream_options", "invalid_type")
    include_usage = _typed(options or {}, "include_usage", bool, False, param="stream_options.include_usage")
    temperature = _number(data, "temperature", 0, MAX_TEMPERATURE)
    param = "max_completion_tokens" if "max_completion_tokens" in data else "max_tokens"
    max_tokens = data.get(param)
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1):
        raise _invalid(f"{param} must be a whole number of at least 1.", param)
    return ChatRequest(
        model=model.strip(),
        messages=_messages(data.get("messages")),
        stream=stream,
        include_usage=include_usage,
        temperature=temperature,
        max_tokens=max_tokens,
        user=_typed(data, "user", str, ""),
    )


def _refuse_unsupported_values(data: dict) -> None:
    if data.get("n", 1) != 1:
        raise _invalid(
            "Only one choice per request is supported: leave out `n` or set it to 1.", "n", "unsupported_value"
        )
    if data.get("logprobs"):
        raise _invalid("Log probabilities are not available for agents' answers.", "logprobs", "unsupported_value")
    if data.get("tool_choice", "none") != "none":
        raise _invalid(NO_TOOLS, "tool_choice", "unsupported_parameter")
    response_format = data.get("response_format", {"type": "text"})
    if not isinstance(response_format, dict) or response_format.get("type") != "text":
        raise _invalid(
            "Only text answers are supported: leave out `response_format` or set its type to `text`.",
            "response_format",
            "unsupported_value",
        )
    if data.get("modalities", ["text"]) != ["text"]:
        raise _invalid(
            'Agents answer in text only: leave out `modalities` or set it to ["text"].',
            "modalities",
            "unsupported_value",
        )


def _typed(data: dict, name: str, kind: type, default: Any, *, param: str | None = None) -> Any:
    value = data.get(name, default)
    if not isinstance(value, kind):
        raise _invalid(f"{param or name} must be a {kind.__name__}.", param or name, "invalid_type")
    return value


def _number(data: dict, name: str, low: float, high: float) -> float | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise _invalid(f"{name} must be a number from {low} to {high:g}.", name)
    return float(value)


def _messages(value: Any) -> list[dict]:
    if value is None:
        raise _invalid("You must provide messages.", "messages", "missing_required_parameter")
    if not isinstance(value, list) or not value:
        raise _invalid("messages must be a non-empty array.", "messages", "invalid_type")
    messages = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise _invalid(f"{where} must be an object with a role and content.", where, "invalid_type")
        role = message.get("role")
        if role in ("tool", "function") or message.get("tool_calls") or message.get("function_call"):
            raise _invalid(NO_TOOLS, where, "unsupported_value")
        if role not in ROLES:
            raise _invalid(f"{where}.role must be one of: {', '.join(ROLES)}.", f"{where}.role", "invalid_value")
        messages.append({"role": ROLES[role], "content": _text_content(message.get("content"), f"{where}.content")})
    return messages


def _text_content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _invalid(f"{where} must be a string or an array of text parts.", where, "invalid_type")
    texts = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind != "refusal":
            raise _invalid(
                f"Only text content is supported; {where}[{index}] is {kind or 'not a text part'}.",
                f"{where}[{index}]",
                "unsupported_value",
            )
    return "\n".join(texts)


def chat_completion_start(*, key: ApiKey, chat: ChatRequest) -> AgentRun:
    """Start the run that answers the request (in the current tenant's schema)."""
    agent = agent_get_callable(slug=chat.model)
    if agent is None:
        raise model_not_found(chat.model)
    return agent_call_start(key=key, agent=agent, messages=chat.messages, overrides=chat.overrides, end_user=chat.user)


def chat_completion_start_once(*, key: ApiKey, chat: ChatRequest, idempotency_key: str, body: bytes) -> AgentRun:
    """With an `Idempotency-Key`: the first request starts the run; a retry with the same key and body gets
    that same run back (its answer, whole or streamed again from the start) instead of running twice."""
    record, fresh = idempotency_claim(
        owner=f"key:{key.pk}",
        key=idempotency_key,
        method="POST",
        path="/v1/chat/completions",
        fingerprint=hashlib.sha256(body).hexdigest(),
    )
    if not fresh:
        run = AgentRun.objects.filter(pk=record.run_id).first()
        if run is None:
            raise OpenAIError("The run this Idempotency-Key started no longer exists.", status=410, code="gone")
        return run
    try:
        run = chat_completion_start(key=key, chat=chat)
    except BaseException:
        record.delete()
        raise
    record.state, record.run_id, record.status_code = IdempotentRequest.State.DONE, run.pk, 200
    record.save(update_fields=["state", "run_id", "status_code"])
    return run


# --- the answer ----------------------------------------------------------------------------------------
def completion_id(run: AgentRun) -> str:
    return f"chatcmpl-{run.pk.hex}"


def _usage(tokens_in: int, tokens_out: int) -> dict:
    return {"prompt_tokens": tokens_in, "completion_tokens": tokens_out, "total_tokens": tokens_in + tokens_out}


REPORTED_FINISH_REASONS = {STOP, LENGTH, "content_filter"}


def _finish_reason(mode: str, tokens_out: int, max_tokens: int | None, reported: str | None = None) -> str:
    """The provider's own reason for a chat-mode answer (its `final_answer` event carries it). Runs stored without
    it: a chat-mode run is one model call, so using all of max_tokens means the provider cut the answer short
    (tools-mode runs add up several calls, so the same sum says nothing there). Estimated tokens (a provider that
    reports no usage) would make that guess wrong either way, which is why the reason is kept."""
    if reported in REPORTED_FINISH_REASONS:
        return reported
    return LENGTH if mode == "chat" and max_tokens and tokens_out >= max_tokens else STOP


def _reported_finish(run: AgentRun) -> str | None:
    data = run.steps.filter(type="final_answer").order_by("-seq").values_list("data", flat=True).first()
    return (data or {}).get("finish_reason")


def completion_object(*, run: AgentRun, chat: ChatRequest) -> dict:
    """The `chat.completion` answering the request, once its run has ended; OpenAIError if it failed. Reads the
    answer's finish reason from the run's steps (one query)."""
    if run.status != RunStatus.SUCCEEDED:
        raise run_failure_error(status=run.status, error=run.error)
    return {
        "id": completion_id(run),
        "object": "chat.completion",
        "created": int(run.created_at.timestamp()),
        "model": chat.model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": run.output, "refusal": None, "annotations": []},
                "logprobs": None,
                "finish_reason": _finish_reason(
                    run.spec.get("mode", ""), run.tokens_out, chat.max_tokens, _reported_finish(run)
                ),
            }
        ],
        "usage": _usage(run.tokens_in, run.tokens_out),
        "system_fingerprint": None,
    }


def _sse(data: dict | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


class CompletionChunks:
    """Turns a run's events into `chat.completion.chunk` server-sent events, in OpenAI's order: the role,
    the content, the finish reason, the usage (when asked for), `[DONE]`.

    Content: a chat-mode agent's answer is streamed as the model writes it (`text_delta`); a tools-mode
    agent's text deltas are its reasoning between tool calls, so its answer is sent when it is final
    (`final_answer`). A run that fails after the stream began ends with an error event, as OpenAI's do."""

    keepalive = b": keep-alive\n\n"

    def __init__(self, *, run: AgentRun, chat: ChatRequest) -> None:
        self.id, self.model, self.created = completion_id(run), chat.model, int(time.time())
        self.mode = run.spec.get("mode", "")
        self.chat = chat
        self.sent = ""
        self.tokens = (0, 0)
        self.reported_finish: str | None = None

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }
        if self.chat.include_usage:
            chunk["usage"] = None
        return _sse(chunk)

    def opening(self) -> bytes:
        return self._chunk({"role": "assistant", "content": "", "refusal": None})

    def _content(self, text: str) -> bytes:
        self.sent += text
        return self._chunk({"content": text}) if text else b""

    def event(self, event: dict) -> bytes:
        if event["agent"]:  # a sub-agent's: part of the work, not of the answer
            return b""
        kind, data = event["type"], event["data"]
        if kind == "text_delta" and self.mode == "chat":
            return self._content(data["text"])
        if kind == "final_answer":
            self.reported_finish = data.get("finish_reason")
            if data["text"].startswith(self.sent):
                return self._content(data["text"][len(self.sent) :])
        if kind == "usage":
            self.tokens = (data["tokens_in"], data["tokens_out"])
        if kind == "run_finished":
            if data["status"] != RunStatus.SUCCEEDED:
                return self.error(run_failure_error(status=data["status"], error=data.get("error", "")))
            return self.closing()
        return b""

    def closing(self) -> bytes:
        reason = _finish_reason(self.mode, self.tokens[1], self.chat.max_tokens, self.reported_finish)
        parts = [self._chunk({}, reason)]
        if self.chat.include_usage:
            parts.append(
                _sse(
                    {
                        "id": self.id,
                        "object": "chat.completion.chunk",
                        "created": self.created,
                        "model": self.model,
                        "system_fingerprint": None,
                        "choices": [],
                        "usage": _usage(*self.tokens),
                    }
                )
            )
        return b"".join([*parts, _sse("[DONE]")])

    def error(self, error: OpenAIError) -> bytes:
        return _sse(error.body()) + _sse("[DONE]")


async def completion_chunks(*, tenant: Any, run: AgentRun, chat: ChatRequest) -> AsyncIterator[bytes]:
    """The streamed answer to `chat`, following its run live. Closing it early (the client went away)
    cancels the run."""
    chunks = CompletionChunks(run=run, chat=chat)
    yield chunks.opening()
    try:
        async with aclosing(run_follow(tenant, run)) as events:
            async for event in events:
                data = chunks.keepalive if event is None else chunks.event(event)
                if data:
                    yield data
    except ApplicationError as exc:
        yield chunks.error(openai_error_from(exc))
