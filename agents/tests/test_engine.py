"""A chat run announced while the model works on its request: the engine's `on_start` (the worker's
`run_started`) and the step's start happen once the request is out, not before it is sent. The model is the local
OpenAI-compatible test server (real HTTP and server-sent events), standing in for the external provider; the engine
needs nothing else."""

import socket
from collections.abc import Callable
from typing import Any

import pytest

from agents.runtime.engine import Engine, RunFailed
from agents.runtime.events import EventType
from agents.tools import RunContext
from nexent_site.integrations.openai_compat import ProviderConfig, chat_stream
from nexent_site.testing.fake_openai import FakeOpenAI, Reply
from nexent_site.testing.waiting import wait_for


def provider(base_url: str) -> ProviderConfig:
    return ProviderConfig(kind="chat", base_url=base_url, model="fake-model", timeout_s=10)


def chat_engine(base_url: str, events: list[tuple], on_start: Callable[[], None]) -> Engine:
    return Engine(
        spec={"mode": "chat", "slug": "talker", "instructions": {"role": "Be brief."}, "tools": []},
        messages=[{"role": "user", "content": "hello"}],
        providers={"default": provider(base_url)},
        mcp_servers={},
        context=RunContext(schema_name="tenant_a", run_id="run-1"),
        emit=lambda type, data, agent="": events.append((type, data)),
        on_start=on_start,
    )


def test_a_chat_run_is_announced_while_the_model_works_on_its_request(fake_llm: FakeOpenAI) -> None:
    # given: a model that takes a moment to answer
    fake_llm.script(Reply(content="Hello there", delay_s=0.3))
    events: list[tuple] = []

    def on_start() -> None:  # the worker publishes run_started here: by then the provider has the request
        events.append(("announced", wait_for(lambda: len(fake_llm.chat_requests()) == 1)))

    # when
    result = chat_engine(fake_llm.base_url, events, on_start).run()

    # then: announced with the request already at the provider, then the step, then the answer
    assert result.output == "Hello there"
    assert events[0] == ("announced", True)
    assert [type for type, _ in events[1:]][:2] == [EventType.STEP_STARTED, EventType.TEXT_DELTA]
    assert events[-1][0] == EventType.FINAL_ANSWER
    assert len(fake_llm.chat_requests()) == 1


def test_a_request_that_cannot_be_sent_still_announces_the_run_before_it_fails() -> None:
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    events: list[tuple] = []
    engine = chat_engine(f"http://127.0.0.1:{port}/v1", events, lambda: events.append(("announced",)))

    with pytest.raises(RunFailed) as failure:
        engine.run()

    assert "cannot connect" in failure.value.message
    assert [event[0] for event in events] == ["announced", EventType.STEP_STARTED]


def test_what_on_sent_raises_is_raised_and_the_model_call_is_dropped(fake_llm: FakeOpenAI) -> None:
    """A stop seen while the run is announced: the answer is not read, and the provider's connection is closed."""
    fake_llm.script(Reply(content=" ".join(f"word{i}" for i in range(100)), token_gap_s=0.05))

    def on_sent() -> Any:
        raise LookupError("stopped while announcing")

    stream = chat_stream(provider(fake_llm.base_url), on_sent=on_sent, messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(LookupError, match="stopped while announcing"):
        next(stream)

    assert len(fake_llm.chat_requests()) == 1
    assert wait_for(lambda: fake_llm.dropped_streams == 1, timeout_s=3)  # long before the answer's 5 s


def test_a_wrong_key_fails_the_chat_run_as_unauthorized_without_showing_the_key(fake_llm: FakeOpenAI) -> None:
    fake_llm.api_key = "sk-right"
    config = ProviderConfig(kind="chat", base_url=fake_llm.base_url, model="fake-model", api_key="sk-wrong-secret")
    events: list[tuple] = []
    engine = chat_engine(fake_llm.base_url, events, lambda: None)
    engine.providers = {"default": config}

    with pytest.raises(RunFailed) as failure:
        engine.run()

    assert failure.value.code == "unauthorized"
    assert "authentication failed (401)" in failure.value.message
    assert "sk-wrong-secret" not in failure.value.message
