"""Chat calls sent by the HTTP client under the provider's OpenAI client, without the SDK's request building
(`nexent_site.integrations.openai_compat`): what reaches the provider, and how its HTTP errors are worded. The
provider is the local OpenAI-compatible test server (real HTTP and server-sent events), standing in for the
external one."""

from collections.abc import Callable
from typing import Any

import pytest

from nexent_site.integrations.openai_compat import ProviderConfig, ProviderError, chat_complete, chat_stream
from nexent_site.testing.fake_openai import FakeOpenAI, Reply

MESSAGES = [{"role": "user", "content": "hi"}]


def streamed(config: ProviderConfig, **params: Any) -> dict:
    """The first chunk of a streamed answer (errors come with it)."""
    return next(chat_stream(config, **params))


@pytest.mark.parametrize("call", [chat_stream, chat_complete], ids=["streamed", "whole"])
def test_a_chat_request_carries_the_key_and_the_providers_headers(fake_llm: FakeOpenAI, call: Callable) -> None:
    fake_llm.api_key = "sk-tenant-key"
    fake_llm.script(Reply(content="Hi there"))
    config = ProviderConfig(
        kind="chat",
        base_url=fake_llm.base_url + "/",  # a trailing slash, as operators type it
        model="fake-model",
        api_key="sk-tenant-key",
        headers={"X-Organisation": "acme"},
        timeout_s=10,
    )

    answer = call(config, messages=MESSAGES, temperature=0.2)

    if call is chat_stream:
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in answer if c["choices"])
    else:
        text = answer["choices"][0]["message"]["content"]
    assert text == "Hi there"
    (request,) = fake_llm.requests
    headers = {name.lower(): value for name, value in request["headers"].items()}
    assert request["path"] == "/v1/chat/completions"
    assert headers["authorization"] == "Bearer sk-tenant-key"
    assert headers["x-organisation"] == "acme"
    assert request["body"] == {
        "model": "fake-model",
        "messages": MESSAGES,
        "temperature": 0.2,
        **({"stream": True} if call is chat_stream else {}),
    }
    if call is chat_stream:
        assert headers["accept"] == "text/event-stream"


@pytest.mark.parametrize("call", [streamed, chat_complete], ids=["streamed", "whole"])
@pytest.mark.parametrize(
    ("status", "code", "words"),
    [
        (401, "unauthorized", "authentication failed (401): Incorrect API key provided."),
        (429, "rate_limited", "rate limited (429): Incorrect API key provided."),
        (503, "server_error", "HTTP 503 from provider: Incorrect API key provided."),
        (400, "http_error", "HTTP 400 from provider: Incorrect API key provided."),
    ],
)
def test_an_http_error_answer_is_worded_for_the_operator(
    fake_llm: FakeOpenAI, call: Callable, status: int, code: str, words: str
) -> None:
    fake_llm.script(Reply(status=status, error_message="Incorrect API key provided."))
    config = ProviderConfig(kind="chat", base_url=fake_llm.base_url, model="fake-model", timeout_s=10)

    with pytest.raises(ProviderError) as failure:
        call(config, messages=MESSAGES)

    assert (failure.value.code, failure.value.message) == (code, words)
    assert failure.value.transient is (code in {"rate_limited", "server_error"})


@pytest.mark.parametrize("call", [streamed, chat_complete], ids=["streamed", "whole"])
def test_a_provider_that_does_not_answer_in_time_is_a_timeout(fake_llm: FakeOpenAI, call: Callable) -> None:
    fake_llm.script(Reply(content="late", delay_s=2))
    config = ProviderConfig(kind="chat", base_url=fake_llm.base_url, model="fake-model", timeout_s=0.5)

    with pytest.raises(ProviderError) as failure:
        call(config, messages=MESSAGES)

    assert failure.value.code == "timeout"
    assert failure.value.message == f"timed out after 0.5s waiting for {fake_llm.base_url}"


def test_a_providers_clients_never_show_its_key() -> None:
    """What a traceback or a log line could print of the clients kept per provider setting."""
    from nexent_site.integrations.openai_compat import _endpoint_for

    config = ProviderConfig(kind="chat", base_url="http://127.0.0.1:9/v1", model="m", api_key="sk-do-not-print-me")

    shown = repr(_endpoint_for(config)) + repr(config)

    assert "sk-do-not-print-me" not in shown
    assert "http://127.0.0.1:9/v1/chat/completions" in shown
