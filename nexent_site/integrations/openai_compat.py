"""One small interface to every remote model: chat, embeddings and rerank over the OpenAI-compatible
HTTP protocol (OpenAI, DeepSeek, DashScope, SiliconFlow, vLLM, Ollama, llama.cpp, the bundled local ones).

Failures surface as `ProviderError` with a message an operator can act on; keys never appear in it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai
from httpx_sse import EventSource

PING_MESSAGE = "Reply with the single word: pong"


class ProviderError(Exception):
    """A model call failed. `message` is readable and safe to store and show (no secrets)."""

    TRANSIENT = frozenset({"timeout", "unreachable", "rate_limited", "server_error"})

    def __init__(self, message: str, *, code: str = "provider_error") -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    @property
    def transient(self) -> bool:
        """Worth retrying later (overload, outage), unlike a bad key or a malformed answer."""
        return self.code in self.TRANSIENT


@dataclass(frozen=True)
class ProviderConfig:
    kind: str
    base_url: str
    model: str
    api_key: str = field(default="", repr=False)
    timeout_s: float = 60.0
    headers: dict[str, str] = field(default_factory=dict)
    dimension: int | None = None
    tool_choice: str = "required"
    stream_tool_calls: bool = True
    provider_id: int | None = None
    max_concurrency: int = 0  # 0: unlimited
    input_type: bool = False  # send input_type=query/passage with embedding requests

    @classmethod
    def from_provider(cls, provider: Any) -> ProviderConfig:
        return cls(
            kind=provider.kind,
            base_url=provider.base_url,
            model=provider.model_name,
            api_key=provider.api_key or "",
            timeout_s=provider.timeout_s,
            headers=dict(provider.extra_headers or {}),
            dimension=provider.dimension,
            tool_choice=provider.tool_choice,
            stream_tool_calls=provider.stream_tool_calls,
            provider_id=provider.pk,
            max_concurrency=provider.max_concurrency,
            input_type=getattr(provider, "embedding_input_type", False),
        )


_clients: dict[tuple, openai.OpenAI] = {}
_clients_lock = threading.Lock()
# What to call once the request being sent in this thread is out (see `chat_stream`'s `on_sent`)
_on_sent: ContextVar[Callable[[], None] | None] = ContextVar("nexent_on_sent", default=None)


class _SentTrace:
    """httpcore's `trace` extension for one request: calls `callback` once the request is sent, as the connection
    starts waiting for the response."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback: Callable[[], None] | None = callback

    def __call__(self, name: str, info: dict) -> None:
        if self.callback is not None and name.endswith("receive_response_headers.started"):
            callback, self.callback = self.callback, None
            callback()


def _trace_when_sent(request: httpx2.Request) -> None:
    """The clients' request hook: a request sent with an `on_sent` callback gets a trace that calls it."""
    callback = _on_sent.get()
    if callback is not None:
        request.extensions["trace"] = _SentTrace(callback)


def client_for(config: ProviderConfig) -> openai.OpenAI:
    """A client per provider setting, shared by the process's threads (making one costs 20-40 ms)."""
    key = (config.base_url, config.api_key, config.timeout_s, tuple(sorted((config.headers or {}).items())))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            if len(_clients) > 256:
                _clients.clear()
            client = _clients[key] = openai.OpenAI(
                base_url=config.base_url,
                api_key=config.api_key or "not-needed",
                timeout=config.timeout_s,
                max_retries=0,
                default_headers=config.headers or None,
                http_client=openai.DefaultHttpxClient(event_hooks={"request": [_trace_when_sent]}),
            )
    return client


def describe_error(exc: BaseException, config: ProviderConfig) -> ProviderError:
    """Turn a client exception into a ProviderError with a readable reason."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(f"timed out after {config.timeout_s:g}s waiting for {config.base_url}", code="timeout")
    if isinstance(exc, openai.APIConnectionError):
        cause = exc.__cause__ or exc
        return ProviderError(f"cannot connect to {config.base_url}: {type(cause).__name__}", code="unreachable")
    # a streamed answer is read outside the SDK's stream (chat_stream): a failure while reading it comes as the
    # SDK's HTTP library's own (httpx2)
    if isinstance(exc, httpx2.TimeoutException):
        return ProviderError(f"timed out after {config.timeout_s:g}s waiting for {config.base_url}", code="timeout")
    if isinstance(exc, httpx2.TransportError):
        return ProviderError(
            f"the connection to {config.base_url} broke before the answer was finished ({type(exc).__name__})",
            code="unreachable",
        )
    if isinstance(exc, openai.AuthenticationError):
        return ProviderError(f"authentication failed (401): {_status_text(exc)}", code="unauthorized")
    if isinstance(exc, openai.RateLimitError):
        return ProviderError(f"rate limited (429): {_status_text(exc)}", code="rate_limited")
    if isinstance(exc, openai.APIStatusError):
        code = "server_error" if exc.status_code >= 500 else "http_error"
        return ProviderError(f"HTTP {exc.status_code} from provider: {_status_text(exc)}", code=code)
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError | ValueError | KeyError | TypeError):
        return ProviderError(f"malformed response from provider: {str(exc)[:200]}", code="malformed")
    return ProviderError(f"{type(exc).__name__}: {str(exc)[:300]}")


def _status_text(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:300]
        if isinstance(error, str):
            return error[:300]
    return str(exc.message)[:300]


def chat_stream(config: ProviderConfig, *, on_sent: Callable[[], None] | None = None, **params: Any) -> Iterator[dict]:
    """A streamed chat completion (`params` as for `chat.completions.create`), chunk by chunk as plain dicts.

    Sent by the provider's OpenAI client (its base URL, key, headers and timeout, and the SDK's exceptions for
    HTTP and connection failures, which `describe_error` reads), but read as server-sent events without the
    SDK's typed chunk objects: building one per token, and type-walking the request, cost a chat turn 22 ms of
    CPU against 8 ms this way (40 tokens, slow vCPUs). An error the provider reports mid-stream is raised as
    `openai.APIError`, as the SDK's own stream does. Close the iterator to drop the connection early.

    `on_sent` is called in this thread (on the first `next()`) once the request is out, before the answer is
    waited for: what it does takes no time from the answer while the provider works on it. Whatever it raises is
    raised once the response has begun (the connection dropped). It is not called when the request could not be
    sent."""
    body = {"model": config.model, **params, "stream": True}
    raised: list[BaseException] = []

    def sent() -> None:
        try:
            on_sent()  # type: ignore[misc]
        except Exception as exc:  # not through httpcore and the SDK, which would take it for a connection failure
            raised.append(exc)

    token = _on_sent.set(sent if on_sent is not None else None)
    try:
        response = client_for(config).post("/chat/completions", cast_to=httpx2.Response, body=body, stream=True)
    finally:
        _on_sent.reset(token)
    if raised:
        response.close()
        raise raised[0]
    try:
        for event in EventSource(response).iter_sse():
            if event.data.startswith("[DONE]"):
                return
            chunk = json.loads(event.data)
            if isinstance(chunk, dict) and chunk.get("error"):
                error = chunk["error"]
                message = error.get("message") if isinstance(error, dict) else str(error)
                raise openai.APIError(str(message or "the provider reported an error"), response.request, body=error)
            yield chunk
    finally:
        response.close()


def chat_complete(config: ProviderConfig, **params: Any) -> dict:
    """A chat completion (`params` as for `chat.completions.create`, not streamed) as the provider's plain JSON.
    Sent like `chat_stream`, by the provider's OpenAI client (its URL, key, headers, timeout and exceptions),
    without the SDK's typed request walk and response objects: for small calls made often (titles)."""
    body = {"model": config.model, **params}
    response = client_for(config).post("/chat/completions", cast_to=httpx2.Response, body=body)
    try:
        return response.json()
    except ValueError:
        raise ProviderError("malformed response: not JSON", code="malformed") from None


def completion_text(completion: Any) -> str:
    """The text of a chat completion's first choice in the provider's JSON ("" when there is none)."""
    try:
        return completion["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        return ""


def chat_ping(config: ProviderConfig) -> str:
    """One real, tiny chat completion. Returns the model's text."""
    try:
        completion = chat_complete(
            config, messages=[{"role": "user", "content": PING_MESSAGE}], max_tokens=5, temperature=0
        )
    except ProviderError:
        raise
    except Exception as exc:
        raise describe_error(exc, config) from None
    if not isinstance(completion, dict) or not completion.get("choices"):
        raise ProviderError("malformed response: no choices", code="malformed")
    return completion_text(completion)


def embed(config: ProviderConfig, texts: Sequence[str], *, input_type: str = "query") -> list[list[float]]:
    """Embeddings for `texts`, in order. Checks the dimension against `config.dimension` when set.
    `input_type` ("query" or "passage") is sent only to providers configured to take it."""
    extra = {"input_type": input_type} if config.input_type else None
    try:
        response = client_for(config).embeddings.create(model=config.model, input=list(texts), extra_body=extra)
        vectors = [item.embedding for item in sorted(response.data, key=lambda item: item.index)]
    except Exception as exc:
        raise describe_error(exc, config) from None
    if len(vectors) != len(texts) or any(not isinstance(v, list) or not v for v in vectors):
        raise ProviderError(f"malformed response: {len(vectors)} embeddings for {len(texts)} inputs", code="malformed")
    dims = {len(vector) for vector in vectors}
    if len(dims) != 1:
        raise ProviderError(f"malformed response: embeddings of different sizes {sorted(dims)}", code="malformed")
    if config.dimension and dims != {config.dimension}:
        raise ProviderError(
            f"embedding has {dims.pop()} dimensions, expected {config.dimension}", code="dimension_mismatch"
        )
    return vectors


def rerank(config: ProviderConfig, query: str, documents: Sequence[str]) -> list[float]:
    """Relevance scores for `documents` (the `/rerank` endpoint of Jina, Cohere-compatible, vLLM, SiliconFlow)."""
    client = client_for(config)
    try:
        response = client.post(
            "/rerank",
            body={"model": config.model, "query": query, "documents": list(documents)},
            cast_to=object,
        )
        scores = [0.0] * len(documents)
        for item in response["results"]:
            scores[int(item["index"])] = float(item["relevance_score"])
        return scores
    except Exception as exc:
        raise describe_error(exc, config) from None


def provider_probe(config: ProviderConfig) -> dict[str, Any]:
    """The connectivity test: a real call of the provider's kind. Returns facts learned (e.g. dimension)."""
    if config.kind == "embedding":
        vectors = embed(ProviderConfig(**{**config.__dict__, "dimension": None}), ["connectivity test"])
        return {"dimension": len(vectors[0])}
    if config.kind == "rerank":
        rerank(config, "connectivity test", ["a document"])
        return {}
    chat_ping(config)
    return {}
