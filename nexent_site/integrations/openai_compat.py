"""One small interface to every remote model: chat, embeddings and rerank over the OpenAI-compatible
HTTP protocol (OpenAI, DeepSeek, DashScope, SiliconFlow, vLLM, Ollama, llama.cpp, the bundled local ones).

Failures surface as `ProviderError` with a message an operator can act on; keys never appear in it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai
from httpx_sse import connect_sse

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


@dataclass(frozen=True)
class _Endpoint:
    """A provider setting's clients: the OpenAI SDK's, and the HTTP client under it, with what a chat request
    sent by that HTTP client directly needs (`chat_stream`)."""

    client: openai.OpenAI = field(repr=False)
    http: httpx2.Client = field(repr=False)
    chat_url: str
    headers: dict[str, str] = field(repr=False)  # the key among them: never shown


_endpoints: dict[tuple, _Endpoint] = {}
_endpoints_lock = threading.Lock()


class _SentTrace:
    """httpcore's `trace` extension for one request: calls `callback` once the request is sent, as the connection
    starts waiting for the response."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback: Callable[[], None] | None = callback

    def __call__(self, name: str, info: dict) -> None:
        if self.callback is not None and name.endswith("receive_response_headers.started"):
            callback, self.callback = self.callback, None
            callback()


def _endpoint_for(config: ProviderConfig) -> _Endpoint:
    """The clients of a provider setting, shared by the process's threads (making one costs 20-40 ms)."""
    key = (config.base_url, config.api_key, config.timeout_s, tuple(sorted((config.headers or {}).items())))
    with _endpoints_lock:
        endpoint = _endpoints.get(key)
        if endpoint is None:
            if len(_endpoints) > 256:
                _endpoints.clear()
            http = openai.DefaultHttpxClient()
            client = openai.OpenAI(
                base_url=config.base_url,
                api_key=config.api_key or "not-needed",
                timeout=config.timeout_s,
                max_retries=0,
                default_headers=config.headers or None,
                http_client=http,
            )
            endpoint = _endpoints[key] = _Endpoint(
                client=client,
                http=http,
                chat_url=f"{str(client.base_url).rstrip('/')}/chat/completions",
                # as the SDK authenticates, with the provider's own headers (which may replace it)
                headers={"Authorization": f"Bearer {client.api_key}", **(config.headers or {})},
            )
    return endpoint


def client_for(config: ProviderConfig) -> openai.OpenAI:
    """The OpenAI client of a provider setting, shared by the process's threads."""
    return _endpoint_for(config).client


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
    if isinstance(exc, openai.APIStatusError):
        return _status_error(exc.status_code, exc.body, str(exc.message))
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError | ValueError | KeyError | TypeError):
        return ProviderError(f"malformed response from provider: {str(exc)[:200]}", code="malformed")
    return ProviderError(f"{type(exc).__name__}: {str(exc)[:300]}")


def _status_error(status: int, body: Any, fallback: str) -> ProviderError:
    """The ProviderError for an HTTP error answer: its status, and the provider's message from its body (OpenAI's
    `{"error": {"message": …}}`, or the body's `error` text), else `fallback`."""
    text = fallback
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            text = str(error["message"])
        elif isinstance(error, str):
            text = error
    text = text[:300]
    if status == 401:
        return ProviderError(f"authentication failed (401): {text}", code="unauthorized")
    if status == 429:
        return ProviderError(f"rate limited (429): {text}", code="rate_limited")
    code = "server_error" if status >= 500 else "http_error"
    return ProviderError(f"HTTP {status} from provider: {text}", code=code)


def _status_error_of(response: httpx2.Response) -> ProviderError:
    """`_status_error` for an HTTP error answer, whole or streamed (its body read here, at most 64 KB of it)."""
    raw = b""
    for part in response.iter_bytes():
        raw += part
        if len(raw) > 65_536:
            break
    try:
        body: Any = json.loads(raw)
    except ValueError:
        body = None
    text = raw.decode("utf-8", "replace").strip() or response.reason_phrase
    return _status_error(response.status_code, body, f"Error code: {response.status_code} - {text}")


def _not_answered(exc: httpx2.HTTPError, config: ProviderConfig) -> ProviderError:
    """A request that got no answer: not sent (no connection), timed out, or dropped before any answer began."""
    if isinstance(exc, httpx2.TimeoutException):
        return describe_error(exc, config)
    return ProviderError(f"cannot connect to {config.base_url}: {type(exc).__name__}", code="unreachable")


def chat_stream(config: ProviderConfig, *, on_sent: Callable[[], None] | None = None, **params: Any) -> Iterator[dict]:
    """A streamed chat completion (`params` as for `chat.completions.create`), chunk by chunk as plain dicts.

    Sent by the HTTP client under the provider's OpenAI client (its connections, with the SDK's base URL, key and
    headers, and the provider's timeout) as a request for server-sent events (httpx-sse), and read without the SDK's
    typed chunk objects: building one per token, and type-walking the request, cost a chat turn 22 ms of CPU against
    8 ms this way (40 tokens, slow vCPUs); the SDK's building of the request took another 0.3-0.4 ms of each turn's
    CPU, on the way to the first token. Failures are raised as `describe_error` words them: a `ProviderError` when
    the request could not be sent or was answered with an HTTP error; the HTTP library's own exception when the
    connection breaks mid-answer, and `openai.APIError` for an error the provider reports mid-stream (as the SDK's
    own stream does). Close the iterator to drop the connection early.

    `on_sent` is called in this thread (on the first `next()`) once the request is out, before the answer is
    waited for: what it does takes no time from the answer while the provider works on it. Whatever it raises is
    raised once the response has begun (the connection dropped). It is not called when the request could not be
    sent."""
    body = {"model": config.model, **params, "stream": True}
    endpoint = _endpoint_for(config)
    raised: list[BaseException] = []

    def sent() -> None:
        try:
            on_sent()  # type: ignore[misc]
        except Exception as exc:  # not through httpcore, which would take it for a connection failure
            raised.append(exc)

    stack = ExitStack()
    request = connect_sse(
        endpoint.http,
        "POST",
        endpoint.chat_url,
        json=body,
        headers=dict(endpoint.headers),
        timeout=config.timeout_s,
        extensions={"trace": _SentTrace(sent)} if on_sent is not None else None,
    )
    try:
        events = stack.enter_context(request)
    except httpx2.HTTPError as exc:
        raise _not_answered(exc, config) from None
    with stack:  # the connection closed however this ends (a stop closes the iterator mid-answer)
        if raised:
            raise raised[0]
        if events.response.status_code >= 400:
            raise _status_error_of(events.response)
        for event in events.iter_sse():
            if event.data.startswith("[DONE]"):
                return
            chunk = json.loads(event.data)
            if isinstance(chunk, dict) and chunk.get("error"):
                error = chunk["error"]
                message = str((error.get("message") if isinstance(error, dict) else error) or "")
                raise openai.APIError(message or "the provider reported an error", events.response.request, body=error)
            yield chunk


def chat_complete(config: ProviderConfig, **params: Any) -> dict:
    """A chat completion (`params` as for `chat.completions.create`, not streamed) as the provider's plain JSON.
    Sent like `chat_stream`, by the HTTP client under the provider's OpenAI client, without the SDK's typed request
    walk and response objects: for small calls made often (titles). Failures are `ProviderError`s."""
    endpoint = _endpoint_for(config)
    body = {"model": config.model, **params}
    try:
        response = endpoint.http.post(endpoint.chat_url, json=body, headers=endpoint.headers, timeout=config.timeout_s)
    except httpx2.HTTPError as exc:
        raise _not_answered(exc, config) from None
    if response.status_code >= 400:
        raise _status_error_of(response)
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
