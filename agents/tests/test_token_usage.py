"""Token usage of runs whose provider reports none (llama.cpp's server streams no usage chunk; no provider reports
usage for an answer stopped midway): estimated, marked so, and counted in the usage records like any other. A real
Celery worker, real PostgreSQL and Redis; the local OpenAI-compatible test server stands in for the provider, told
to leave usage out."""

from typing import Any

import pytest

from agents.models import RunStatus, UsageRecord
from agents.runtime.token_estimate import messages_tokens_estimate, tokens_estimate
from agents.tests.test_runs import follow, start, stored
from conftest import Committed
from nexent_site.testing.fake_openai import FakeOpenAI, Reply, ToolCallSpec
from tenants.models import Tenant


def test_the_estimate_counts_latin_text_by_characters_and_cjk_by_character() -> None:
    assert tokens_estimate("") == 0
    assert tokens_estimate("hello world") == 3  # 11 characters, about 4 a token
    assert tokens_estimate("你好世界") == 4
    assert tokens_estimate("hi 你好") == 3
    plain = [{"role": "user", "content": "hello world"}]
    parts = [{"role": "user", "content": [{"type": "text", "text": "hello world"}]}]
    assert messages_tokens_estimate(plain) == messages_tokens_estimate(parts) == 3 + 4


@pytest.mark.django_db
@pytest.mark.usefixtures("celery_worker")
class TestRunsWithoutReportedUsage:
    def test_a_provider_that_reports_usage_is_taken_at_its_word(
        self, committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
    ) -> None:
        published_agent(slug="counted", mode="chat", role_prompt="Be brief.")
        fake_llm.script(Reply(content="Hello there, how can I help?"))

        run = start(committed, tenant_a, "counted", "hello")
        events = follow(tenant_a, run)

        done = stored(committed, tenant_a, run)
        # the test server counts words: "Be brief." and "hello" in, six words out
        assert (done.tokens_in, done.tokens_out, done.usage_estimated) == (3, 6, False)
        assert next(e["data"] for e in events if e["type"] == "usage")["estimated"] is False

    def test_a_chat_answer_without_usage_is_estimated_and_counted(
        self, committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
    ) -> None:
        # given: a provider that streams no usage, as llama.cpp's server does
        published_agent(slug="uncounted", mode="chat", role_prompt="Be brief.")
        fake_llm.script(Reply(content=" ".join(f"word{i}" for i in range(12)), usage=False))

        # when
        run = start(committed, tenant_a, "uncounted", "tell me twelve words")
        events = follow(tenant_a, run)

        # then: tokens from the text (12 streamed chunks at least), marked as estimated, in the usage records too
        done = stored(committed, tenant_a, run)
        assert done.status == RunStatus.SUCCEEDED and done.usage_estimated is True
        assert done.tokens_out >= 12 and done.tokens_in >= tokens_estimate("Be brief.tell me twelve words")
        record = committed.run(tenant_a, lambda: UsageRecord.objects.get(run_id=run.pk))
        assert (record.tokens_in, record.tokens_out, record.estimated) == (done.tokens_in, done.tokens_out, True)
        usage = next(e["data"] for e in events if e["type"] == "usage")  # live readers are told, too
        assert usage == {"tokens_in": done.tokens_in, "tokens_out": done.tokens_out, "estimated": True}

    def test_a_tools_run_without_usage_is_estimated_per_model_call(
        self, committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
    ) -> None:
        published_agent(slug="tool-user", tools=("calculator",), role_prompt="You do sums.")
        fake_llm.script(
            Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "6*7"})], usage=False),
            Reply(tool_calls=[ToolCallSpec("final_answer", {"answer": "It is 42."})], usage=False),
        )

        run = start(committed, tenant_a, "tool-user", "what is 6 times 7?")
        follow(tenant_a, run)

        done = stored(committed, tenant_a, run)
        assert (done.status, done.output) == ("succeeded", "It is 42.")
        assert done.usage_estimated is True
        # two model calls, each sent smolagents' long system prompt with the tools
        assert done.tokens_in > 2 * 100 and done.tokens_out > 0
