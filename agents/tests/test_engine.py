"""The engine's chat mode sending its model call ahead (`Engine.start`), so that the provider works on the answer
while the worker records and announces the run. The model is the local OpenAI-compatible test server (real HTTP
and server-sent events), standing in for the external provider; the engine needs nothing else."""

import time
from collections.abc import Callable
from typing import Any

import pytest

from agents.runtime.engine import Engine, RunFailed
from agents.runtime.events import EventType
from agents.tools import RunContext
from nexent_site.integrations.openai_compat import ProviderConfig
from nexent_site.testing.fake_openai import FakeOpenAI, Reply


def chat_engine(fake: FakeOpenAI, emitted: list[tuple[str, dict]], **spec: Any) -> Engine:
    return Engine(
        spec={"mode": "chat", "slug": "talker", "instructions": {"role": "Be brief."}, "tools": [], **spec},
        messages=[{"role": "user", "content": "hello"}],
        providers={"default": ProviderConfig(kind="chat", base_url=fake.base_url, model="fake-model", timeout_s=10)},
        mcp_servers={},
        context=RunContext(schema_name="tenant_a", run_id="run-1"),
        emit=lambda type, data, agent="": emitted.append((type, data)),
    )


def wait_for(condition: Callable[[], bool], timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_start_sends_the_model_call_before_the_run_reads_it(fake_llm: FakeOpenAI) -> None:
    # given: a model that takes half a second to answer
    fake_llm.script(Reply(content="Hello there", delay_s=0.5))
    emitted: list[tuple[str, dict]] = []
    engine = chat_engine(fake_llm, emitted)

    # when: started, and not run yet
    engine.start()

    # then: the provider has the request while nothing is published yet
    wait_for(lambda: len(fake_llm.chat_requests()) == 1)
    assert emitted == []
    # and running reads that call (no second request) with the events in their usual order
    result = engine.run()
    assert result.output == "Hello there"
    types = [type for type, _ in emitted]
    assert types[0] == EventType.STEP_STARTED and types[-1] == EventType.FINAL_ANSWER
    assert "".join(data["text"] for type, data in emitted if type == EventType.TEXT_DELTA) == "Hello there"
    requests = fake_llm.chat_requests()
    assert len(requests) == 1 and requests[0]["stream"] is True
    assert requests[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
    ]


def test_a_started_call_that_fails_fails_the_run_when_it_is_read(fake_llm: FakeOpenAI) -> None:
    fake_llm.script(Reply(status=500, error_message="overloaded"))
    emitted: list[tuple[str, dict]] = []
    engine = chat_engine(fake_llm, emitted)

    engine.start()
    wait_for(lambda: len(fake_llm.chat_requests()) == 1)

    with pytest.raises(RunFailed) as failure:
        engine.run()
    assert failure.value.message.startswith("model call failed") and "500" in failure.value.message
    assert [type for type, _ in emitted] == [EventType.STEP_STARTED]


def test_closing_an_engine_that_was_started_and_not_run_drops_the_model_call(fake_llm: FakeOpenAI) -> None:
    # given: a started call streaming a long answer
    fake_llm.script(Reply(content=" ".join(f"word{i}" for i in range(100)), token_gap_s=0.05))
    engine = chat_engine(fake_llm, [])
    engine.start()
    wait_for(lambda: len(fake_llm.chat_requests()) == 1)

    # when: the run ends before it reads the answer (stopped as it was announced)
    engine.close()

    # then: the model's connection is dropped, long before the answer's 5 s
    wait_for(lambda: fake_llm.dropped_streams == 1, timeout_s=3)


def test_a_knowledge_search_goes_before_the_model_call(fake_llm: FakeOpenAI) -> None:
    """Its passages are part of the model's prompt and its events come first: `start` sends nothing then (the
    search itself is not reached: the agent's knowledge base is not in any tenant, and `run` is not called)."""
    search = {"tool": "knowledge_search", "config": {"knowledge_bases": [1], "top_k": 3}}
    fake_llm.script(Reply(content="Hello there"))
    tools_engine = chat_engine(fake_llm, [], mode="tools")
    search_engine = chat_engine(fake_llm, [], tools=[search])
    plain_engine = chat_engine(fake_llm, [])

    tools_engine.start()
    search_engine.start()
    plain_engine.start()  # the one call the server gets

    wait_for(lambda: len(fake_llm.chat_requests()) == 1)
    plain_engine.run()
    assert len(fake_llm.chat_requests()) == 1
