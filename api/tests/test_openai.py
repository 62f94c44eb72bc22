"""The OpenAI-compatible API (/v1) as OpenAI's own Python client sees it: models, chat completions (whole
and streamed), and errors in OpenAI's format. Real uvicorn, PostgreSQL, Redis and Celery worker; only the
agents' model provider is faked (the local OpenAI-compatible test server).

`*.localhost` does not resolve on this machine, so the client connects to 127.0.0.1 and names the tenant
in the Host header: `OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=…, default_headers={"Host": …})`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
import requests
from openai import OpenAI

from agents.models import AgentRun, RunStatus, UsageRecord
from api.models import ApiKey
from conftest import Committed, host_of
from nexent_site.testing.fake_openai import FakeOpenAI, Reply
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def openai_for(asgi_server: dict) -> Callable[..., OpenAI]:
    """`openai_for(tenant, key)`: OpenAI's client on the tenant's /v1, without retries."""

    def make(tenant: Tenant, key: str) -> OpenAI:
        return OpenAI(
            base_url=f"http://127.0.0.1:{asgi_server['port']}/v1",
            api_key=key,
            default_headers={"Host": host_of(tenant)},
            max_retries=0,
            timeout=60,
        )

    return make


PLAIN = {"Content-Type": "text/plain"}


def post_raw(asgi_server: dict, tenant: Tenant, key: str, body: Any, **headers: str) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(
        f"http://127.0.0.1:{asgi_server['port']}/v1/chat/completions",
        data=data,
        headers={
            "Host": host_of(tenant),
            "Authorization": f"Bearer {key}",
            "Content-Type": "application/json",
            **headers,
        },
        timeout=60,
    )


def stored_run(committed: Committed, tenant: Tenant, run_id: str) -> AgentRun:
    return committed.run(tenant, lambda: AgentRun.objects.select_related("api_key").get(pk=run_id))


def test_models_are_the_published_agents_of_the_keys_tenant(
    openai_for: Callable[..., OpenAI], committed_key: Any, published_agent: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    # given an agent in each tenant
    published_agent(slug="helper", description="Answers questions")
    published_agent(tenant=tenant_b, slug="beta-bot")
    client = openai_for(tenant_a, committed_key(tenant_a, scopes="chat"))
    # when / then: A's key lists A's agents only
    models = client.models.list()
    ids = [model.id for model in models.data]
    assert "helper" in ids and "beta-bot" not in ids
    helper = client.models.retrieve("helper")
    assert helper.object == "model" and helper.owned_by == "alpha" and helper.created > 0
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("beta-bot")
    assert missing.value.code == "model_not_found"
    # and B's key is unknown on A's domain
    with pytest.raises(openai.AuthenticationError) as refused:
        openai_for(tenant_a, committed_key(tenant_b, scopes="chat")).models.list()
    assert refused.value.code == "invalid_api_key"


def test_a_chat_completion_is_a_run_of_the_agent_recorded_for_the_key(
    openai_for: Callable[..., OpenAI],
    committed: Committed,
    committed_key: Any,
    fake_llm: FakeOpenAI,
    published_agent: Any,
    tenant_a: Tenant,
) -> None:
    # given a chat agent whose model will answer
    published_agent(slug="helper", mode="chat")
    fake_llm.script(Reply(content="The answer is 42."))
    key = committed_key(tenant_a, scopes="chat")
    # when
    raw = openai_for(tenant_a, key).chat.completions.with_raw_response.create(
        model="helper",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "6 x 7?"}]},
        ],
        temperature=0.2,
        max_tokens=50,
        user="end-user-7",
        top_p=0.9,  # accepted and ignored
        stop=["\n\n"],
        n=1,
    )
    completion = raw.parse()
    # then: OpenAI's answer, with usage
    assert completion.object == "chat.completion" and completion.model == "helper"
    assert completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == "The answer is 42."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.completion_tokens == 4
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 4
    # the model got the messages and the caller's settings
    sent = fake_llm.chat_requests()[-1]
    assert sent["temperature"] == 0.2 and sent["max_tokens"] == 50
    assert {"role": "system", "content": "Be brief."} in sent["messages"]
    assert sent["messages"][-1] == {"role": "user", "content": "What is\n6 x 7?"}
    # and the run is the key's
    run = stored_run(committed, tenant_a, raw.headers["x-nexent-run-id"])
    assert run.trigger == AgentRun.Trigger.API and run.api_key.prefix == key[:12]
    assert run.user_email == "owner@alpha.test" and run.end_user == "end-user-7"
    assert run.spec["temperature"] == 0.2 and run.spec["max_tokens"] == 50


def test_a_streamed_completion_follows_the_run_live(
    openai_for: Callable[..., OpenAI],
    committed_key: Any,
    fake_llm: FakeOpenAI,
    published_agent: Any,
    tenant_a: Tenant,
) -> None:
    # given
    published_agent(slug="streamer", mode="chat")
    # tokens further apart than RUN_TEXT_DELTA_INTERVAL_MS: each is passed on as its own chunk
    fake_llm.script(Reply(content="alpha beta gamma delta", token_gap_s=0.1))
    client = openai_for(tenant_a, committed_key(tenant_a, scopes="chat"))
    # when
    stream = client.chat.completions.create(
        model="streamer",
        messages=[{"role": "user", "content": "go"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    # then: the role first, the text as it came, the finish reason, then the usage
    assert all(chunk.object == "chat.completion.chunk" and chunk.model == "streamer" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(text) == "alpha beta gamma delta" and len(text) == 4
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4


def test_the_stream_is_in_openais_exact_wire_format(
    asgi_server: dict, committed_key: Any, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    # given
    published_agent(slug="streamer", mode="chat")
    fake_llm.script(Reply(content="one two"))
    key = committed_key(tenant_a, scopes="chat")
    body = {"model": "streamer", "messages": [{"role": "user", "content": "go"}], "stream": True}
    # when
    response = post_raw(asgi_server, tenant_a, key, body)
    # then
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    events = [line for line in response.text.split("\n\n") if line]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(event[6:]) for event in events[:-1]]
    opening = {"role": "assistant", "content": "", "refusal": None}
    assert chunks[0]["choices"] == [{"index": 0, "delta": opening, "logprobs": None, "finish_reason": None}]
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]] == ["one ", "two"]
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert "usage" not in chunks[-1]  # only with stream_options.include_usage


def test_a_tools_agent_answers_with_its_final_answer_whole_and_streamed(
    openai_for: Callable[..., OpenAI], committed_key: Any, published_agent: Any, tenant_a: Tenant
) -> None:
    # given a tools-mode agent (the fake model calls final_answer with "echo: <the task it was given>")
    published_agent(slug="toolbox", mode="tools")
    client = openai_for(tenant_a, committed_key(tenant_a, scopes="chat"))
    messages = [{"role": "user", "content": "hello there"}]
    # when / then
    completion = client.chat.completions.create(model="toolbox", messages=messages)
    answer = completion.choices[0].message.content
    assert answer.startswith("echo: ") and answer.endswith("hello there")
    chunks = list(client.chat.completions.create(model="toolbox", messages=messages, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer


def test_max_tokens_used_up_is_finish_reason_length(
    openai_for: Callable[..., OpenAI], committed_key: Any, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    # given a model whose answer is cut at the 5 tokens allowed (the test server says "length", as real ones do)
    published_agent(slug="helper", mode="chat")
    fake_llm.script(Reply(content="one two three four five six seven"), Reply(content="one two three four five six"))
    client = openai_for(tenant_a, committed_key(tenant_a, scopes="chat"))
    messages = [{"role": "user", "content": "count"}]
    # when / then
    completion = client.chat.completions.create(model="helper", messages=messages, max_completion_tokens=5)
    assert completion.choices[0].finish_reason == "length"
    chunks = list(client.chat.completions.create(model="helper", messages=messages, max_tokens=5, stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three four five"


def test_an_answer_that_ended_by_itself_is_finish_reason_stop_even_when_its_tokens_are_estimated(
    openai_for: Callable[..., OpenAI], committed_key: Any, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    """A provider that reports no usage (llama.cpp's server) has its answer's tokens estimated from the text, and an
    estimate can pass max_tokens: the provider's own finish reason is what the caller gets."""
    published_agent(slug="local-like", mode="chat")
    long_words = "supercalifragilistic expialidocious antidisestablishmentarianism"
    fake_llm.script(Reply(content=long_words, usage=False), Reply(content=long_words, usage=False))
    client = openai_for(tenant_a, committed_key(tenant_a, scopes="chat"))
    messages = [{"role": "user", "content": "three long words"}]

    completion = client.chat.completions.create(model="local-like", messages=messages, max_tokens=5)

    assert completion.choices[0].message.content == long_words and completion.usage.completion_tokens > 5
    assert completion.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(model="local-like", messages=messages, max_tokens=5, stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_the_agents_answer_limit_goes_to_the_model_and_callers_may_ask_for_less_not_more(
    openai_for: Callable[..., OpenAI], committed_key: Any, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    # given: an agent whose answers are at most 120 tokens
    published_agent(slug="helper", mode="chat", max_tokens=120)
    fake_llm.script(*[Reply(content="Short.") for _ in range(3)])
    client = openai_for(tenant_a, committed_key(tenant_a, scopes="chat"))
    messages = [{"role": "user", "content": "hi"}]

    # when / then: the model is asked for at most the agent's limit, or less when the caller asks for less
    client.chat.completions.create(model="helper", messages=messages)
    client.chat.completions.create(model="helper", messages=messages, max_tokens=50)
    client.chat.completions.create(model="helper", messages=messages, max_tokens=4000)
    assert [r["max_tokens"] for r in fake_llm.chat_requests()] == [120, 50, 120]


def test_keys_without_the_chat_scope_or_unknown_models_are_refused(
    openai_for: Callable[..., OpenAI], committed_key: Any, published_agent: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    published_agent(tenant=tenant_b, slug="beta-bot")
    messages = [{"role": "user", "content": "hi"}]
    reader = openai_for(tenant_a, committed_key(tenant_a, scopes="knowledge:read"))
    with pytest.raises(openai.PermissionDeniedError) as denied:
        reader.chat.completions.create(model="helper", messages=messages)
    assert denied.value.code == "missing_scope" and "chat" in denied.value.message
    with pytest.raises(openai.PermissionDeniedError):
        reader.models.list()

    client = openai_for(tenant_a, committed_key(tenant_a, scopes="chat"))
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="beta-bot", messages=messages)  # B's agent, asked on A
    assert missing.value.code == "model_not_found" and missing.value.body["type"] == "invalid_request_error"

    for bad_key in ("nxk_bogus", committed_key(tenant_b, scopes="chat")):
        with pytest.raises(openai.AuthenticationError) as refused:
            openai_for(tenant_a, bad_key).chat.completions.create(model="helper", messages=messages)
        assert refused.value.code == "invalid_api_key"


@pytest.mark.parametrize(
    "changes, param, code",
    [
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}, "messages", None),
        ({"messages": []}, "messages", "invalid_type"),
        ({"messages": [{"role": "tool", "content": "42", "tool_call_id": "c1"}]}, "messages[0]", None),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, None, None),
        ({"temperature": 3}, "temperature", "invalid_value"),
        ({"max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"n": 2}, "n", "unsupported_value"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "unsupported_parameter"),
        ({"response_format": {"type": "json_object"}}, "response_format", "unsupported_value"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
        ({"model": None}, "model", "missing_required_parameter"),
    ],
)
def test_invalid_requests_are_400s_naming_the_parameter(
    openai_for: Callable[..., OpenAI],
    committed_key: Any,
    published_agent: Any,
    tenant_a: Tenant,
    changes: dict,
    param: str | None,
    code: str | None,
) -> None:
    published_agent(slug="helper", mode="chat")
    request = {"model": "helper", "messages": [{"role": "user", "content": "hi"}], **changes}
    client = openai_for(tenant_a, committed_key(tenant_a, scopes="chat"))
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(**request)
    assert refused.value.body["type"] == "invalid_request_error" and refused.value.message
    if param:
        assert refused.value.param == param
    else:
        assert refused.value.param and refused.value.param.startswith("messages[0]")
    if code:
        assert refused.value.code == code


def test_malformed_bodies_and_unknown_parameters_are_clear_400s(
    asgi_server: dict, committed_key: Any, tenant_a: Tenant
) -> None:
    key = committed_key(tenant_a, scopes="chat")
    cases = [
        (post_raw(asgi_server, tenant_a, key, b'{"model": "helper", '), "invalid_json"),
        (post_raw(asgi_server, tenant_a, key, b"[]"), "invalid_json"),
        (post_raw(asgi_server, tenant_a, key, "model=helper", **PLAIN), "invalid_content_type"),
        (
            post_raw(asgi_server, tenant_a, key, {"model": "helper", "messages": [], "temprature": 1}),
            "unknown_parameter",
        ),
    ]
    for response, code in cases:
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == code and response.json()["error"]["type"] == "invalid_request_error"
    assert "temprature" in cases[-1][0].json()["error"]["message"]
    # unknown paths and methods answer in the same format
    base = f"http://127.0.0.1:{asgi_server['port']}/v1"
    headers = {"Host": host_of(tenant_a), "Authorization": f"Bearer {key}"}
    unknown = requests.post(f"{base}/embeddings", json={}, headers=headers, timeout=10)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "unknown_url"
    wrong = requests.get(f"{base}/chat/completions", headers=headers, timeout=10)
    assert wrong.status_code == 405 and wrong.headers["Allow"] == "POST"


def test_rate_limits_and_quotas_are_429s_with_retry_after(
    openai_for: Callable[..., OpenAI], committed: Committed, committed_key: Any, published_agent: Any, tenant_a: Tenant
) -> None:
    published_agent(slug="helper", mode="chat")
    # a key limited to one request a minute: of three in a row, at least one is refused
    client = openai_for(tenant_a, committed_key(tenant_a, scopes="chat", requests_per_minute=1))
    refusals = []
    for _ in range(3):
        try:
            client.models.list()
        except openai.RateLimitError as exc:
            refusals.append(exc)
    assert refusals and refusals[0].code == "rate_limit_exceeded"
    assert 1 <= int(refusals[0].response.headers["Retry-After"]) <= 60

    # a key whose monthly tokens are used up
    spent = committed_key(tenant_a, scopes="chat", monthly_token_limit=10)

    def spend() -> None:
        key = ApiKey.objects.get(prefix=spent[:12])
        UsageRecord.objects.create(api_key=key, agent_slug="helper", trigger="api", tokens_in=8, tokens_out=8)

    committed.run(tenant_a, spend)
    committed.on_teardown(tenant_a, lambda: UsageRecord.objects.filter(api_key__prefix=spent[:12]).delete())
    with pytest.raises(openai.RateLimitError) as quota:
        openai_for(tenant_a, spent).chat.completions.create(
            model="helper", messages=[{"role": "user", "content": "hi"}]
        )
    assert quota.value.code == "insufficient_quota" and quota.value.body["type"] == "insufficient_quota"
    assert int(quota.value.response.headers["Retry-After"]) > 0
    assert quota.value.response.headers["x-should-retry"] == "false"


def test_a_failed_run_is_a_server_error_whole_or_streamed(
    openai_for: Callable[..., OpenAI], committed_key: Any, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    # given an agent whose model provider fails
    published_agent(slug="helper", mode="chat")
    fake_llm.script(Reply(status=500, error_message="provider down"), Reply(status=500, error_message="provider down"))
    client = openai_for(tenant_a, committed_key(tenant_a, scopes="chat"))
    messages = [{"role": "user", "content": "hi"}]
    # when / then: a 502 in OpenAI's format
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="helper", messages=messages)
    assert failed.value.status_code == 502 and failed.value.body["type"] == "api_error"
    assert "provider down" in failed.value.message
    # streamed: the error arrives in the stream, and OpenAI's client raises it
    with pytest.raises(openai.APIError) as streamed:
        list(client.chat.completions.create(model="helper", messages=messages, stream=True))
    assert "provider down" in streamed.value.message


def test_a_client_that_hangs_up_mid_stream_stops_the_run(
    openai_for: Callable[..., OpenAI],
    committed: Committed,
    committed_key: Any,
    fake_llm: FakeOpenAI,
    published_agent: Any,
    tenant_a: Tenant,
) -> None:
    # given a slow answer
    published_agent(slug="slowpoke", mode="chat")
    fake_llm.script(Reply(content=" ".join(["word"] * 60), token_gap_s=0.2))
    client = openai_for(tenant_a, committed_key(tenant_a, scopes="chat"))
    # when the client reads the first words and hangs up
    raw = client.chat.completions.with_raw_response.create(
        model="slowpoke", messages=[{"role": "user", "content": "talk"}], stream=True
    )
    stream = raw.parse()
    for _, _chunk in zip(range(3), stream, strict=False):
        pass
    stream.close()
    # then the run is cancelled long before the answer would have ended (12 s)
    run_id = raw.headers["x-nexent-run-id"]
    deadline = time.monotonic() + 8
    while (run := stored_run(committed, tenant_a, run_id)).status in (RunStatus.QUEUED, RunStatus.RUNNING):
        assert time.monotonic() < deadline, "the run went on after the client left"
        time.sleep(0.2)
    assert run.status == RunStatus.CANCELLED


def test_a_retry_with_the_same_idempotency_key_gets_the_same_answer_without_a_second_run(
    asgi_server: dict, committed_key: Any, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    # given
    published_agent(slug="helper", mode="chat")
    fake_llm.script(Reply(content="Only once."))
    key = committed_key(tenant_a, scopes="chat")
    body = {"model": "helper", "messages": [{"role": "user", "content": "hi"}]}
    # when: the same request twice, then streamed, with one key
    first = post_raw(asgi_server, tenant_a, key, body, **{"Idempotency-Key": "order-77"})
    again = post_raw(asgi_server, tenant_a, key, body, **{"Idempotency-Key": "order-77"})
    # then: one run, one model call, the same answer
    assert first.status_code == again.status_code == 200, again.text
    assert first.headers["X-Nexent-Run-Id"] == again.headers["X-Nexent-Run-Id"]
    assert again.json()["choices"][0]["message"]["content"] == "Only once."
    assert len(fake_llm.chat_requests()) == 1
    # and another request under the same key is refused, not run
    other = post_raw(asgi_server, tenant_a, key, {**body, "temperature": 1}, **{"Idempotency-Key": "order-77"})
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert len(fake_llm.chat_requests()) == 1
