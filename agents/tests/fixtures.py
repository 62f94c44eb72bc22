"""Fixtures for agent tests. The only stand-in is the *external* model provider: `FakeOpenAI`, a local
server speaking the real OpenAI HTTP/SSE protocol (see nexent_site/testing/fake_openai.py)."""

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from agents.models import Agent, ModelProvider, SubAgentLink
from conftest import Committed
from nexent_site.testing.fake_openai import FakeOpenAI


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeOpenAI]:
    from conversations.services import TITLE_PROMPT

    server = FakeOpenAI().start()
    server.title_prompt = TITLE_PROMPT
    yield server
    server.stop()


@pytest.fixture
def fake_llm(fake_llm_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    fake_llm_server.reset()
    yield fake_llm_server
    fake_llm_server.reset()


def make_provider(fake: FakeOpenAI, **overrides: Any) -> ModelProvider:
    from agents.services.providers import provider_save

    values = {
        "name": "Fake chat",
        "kind": "chat",
        "base_url": fake.base_url,
        "model_name": "fake-model",
        "timeout_s": 10,
        **overrides,
    }
    api_key = values.pop("api_key", "sk-test-1234567890abcd")
    return provider_save(provider=ModelProvider(**values), api_key=api_key)


@pytest.fixture
def published_agent(committed: Committed, fake_llm: FakeOpenAI, tenant_a: Any) -> Callable[..., Agent]:
    """Build (committed, in tenant A unless told otherwise) a provider and a published agent; removed after."""

    def build(
        *, tenant: Any = tenant_a, slug: str = "helper", tools: tuple = (), provider: dict | None = None, **fields: Any
    ) -> Agent:
        from agents.services.agents import agent_publish, agent_tool_add

        def create() -> Agent:
            chosen = ModelProvider.objects.filter(name="Fake chat").first() or make_provider(
                fake_llm, **(provider or {})
            )
            agent = Agent.objects.create(name=slug.title(), slug=slug, chat_provider=chosen, **fields)
            for tool in tools:
                agent_tool_add(agent=agent, tool=tool)
            agent_publish(agent=agent)
            return agent

        agent = committed.run(tenant, create)

        def remove() -> None:
            # let the worker finish with this agent's runs before their rows go away
            from agents.models import AgentRun, RunStatus
            from agents.services.runs import run_cancel

            for run in AgentRun.objects.filter(agent__slug=slug, status__in=[RunStatus.QUEUED, RunStatus.RUNNING]):
                run_cancel(run=run)
            deadline = time.monotonic() + 30
            while AgentRun.objects.filter(agent__slug=slug, status=RunStatus.RUNNING).exists():
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            SubAgentLink.objects.filter(parent__slug=slug).delete()
            SubAgentLink.objects.filter(child__slug=slug).delete()
            Agent.objects.filter(slug=slug).delete()
            if not Agent.objects.filter(chat_provider__name="Fake chat").exists():
                ModelProvider.objects.filter(name="Fake chat").delete()

        committed.on_teardown(tenant, remove)
        return agent

    return build
