"""An agent with the knowledge_search tool answers from a knowledge base and cites it: the citations are
stored with the answer, link to the cited passage, and only the people who were shown them (or staff) can
open that page. Real worker, real PostgreSQL and Redis; the chat and embedding models are the local
OpenAI-compatible test server."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import transaction
from django.test import Client

from agents.models import Agent, AgentMode, ModelProvider
from agents.tests.fixtures import make_provider
from conftest import Committed, host_of, owner_email
from conversations.models import Conversation, Message
from knowledge.tests.fixtures import upload, wait_for_documents
from nexent_site.testing.fake_openai import FakeOpenAI, Reply, ToolCallSpec

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_worker")]

HANDBOOK = b"""# Expenses

## Refunds
The zephyr refund form must be filed within thirty days of the trip.

## Meals
Meals are reimbursed up to 40 euros a day.
"""


TOOLS_REPLIES = (
    Reply(tool_calls=[ToolCallSpec("knowledge_search", {"query": "zephyr refund form deadline"})]),
    Reply(tool_calls=[ToolCallSpec("final_answer", {"answer": "Within thirty days [1]."})]),
)


def cited_answer(
    committed: Committed,
    tenant: Any,
    fake: FakeOpenAI,
    kb_slug: str,
    *,
    mode: str = AgentMode.TOOLS,
    replies: tuple[Reply, ...] = TOOLS_REPLIES,
    question: str = "When is it due?",
) -> Message:
    from accounts.models import User
    from agents.services.agents import agent_publish, agent_tool_add
    from conversations.services import conversation_message_send, conversation_start

    owner_address = owner_email(tenant.schema_name)

    def create() -> Conversation:
        provider = ModelProvider.objects.filter(name="Fake chat").first() or make_provider(fake)
        agent = Agent.objects.create(name="Librarian", slug="librarian", mode=mode, chat_provider=provider)
        agent_tool_add(agent=agent, tool="knowledge_search", config={"knowledge_bases": [kb_slug]})
        agent_publish(agent=agent)
        return conversation_start(user=User.objects.get(email=owner_address), agent=agent)

    def remove() -> None:
        Conversation.objects.filter(agent__slug="librarian").delete()
        Agent.objects.filter(slug="librarian").delete()

    committed.on_teardown(tenant, remove)
    conversation = committed.run(tenant, create)
    fake.script(*replies, Reply(content="Refund deadline", title=True))

    def send() -> Message:
        with transaction.atomic():
            owner = User.objects.get(email=owner_address)
            return conversation_message_send(conversation=conversation, user=owner, content=question)[1]

    answer_id = committed.run(tenant, send).pk
    deadline = time.monotonic() + 60
    while True:
        answer = committed.run(tenant, lambda: Message.objects.prefetch_related("citations").get(pk=answer_id))
        if answer.status not in ("pending", "streaming"):
            return answer
        assert time.monotonic() < deadline, "the answer never finished"
        time.sleep(0.2)


def test_answers_cite_the_passages_they_used_and_link_to_them(
    committed: Committed, make_kb: Any, tenant_a: Any, tenant_b: Any, fake_llm: FakeOpenAI
) -> None:
    # given a ready knowledge base
    kb = make_kb(slug="expenses", chunk_size=60, chunk_overlap=0)
    document = upload(committed, tenant_a, kb, "expenses.md", HANDBOOK)
    wait_for_documents(committed, tenant_a, [document.pk])
    # when the agent searches it and answers
    answer = cited_answer(committed, tenant_a, fake_llm, "expenses")
    # then the citations are stored with the answer
    assert answer.status == "completed", answer.error
    citations = list(answer.citations.all())
    assert citations and citations[0].index == 1
    first = citations[0]
    assert first.document_id == document.pk and first.document_title == "expenses"
    assert "zephyr refund form" in first.text
    # the tool's result the model saw carried the numbered source
    tool_turn = fake_llm.chat_requests()[1]
    assert "[1] expenses" in str(tool_turn["messages"])
    # the chat page links each citation to its passage
    owner = Client()
    owner.cookies["nexent_session"] = committed.session_cookie(tenant_a, owner_email("alpha"))
    host = {"HTTP_HOST": host_of(tenant_a)}
    page = owner.get(f"/chat/{answer.conversation_id}/", **host).content.decode()
    link = f"/sources/{document.pk}/?chunk={first.chunk_id}"
    assert link in page
    source = owner.get(link, **host)
    assert source.status_code == 200 and "zephyr refund form" in source.content.decode()
    assert "/files/signed/" in source.content.decode()
    # a member who was never shown it, and another tenant's owner, get nothing
    member = f"reader-{time.time_ns()}@alpha.test"
    committed.user(tenant_a, email=member)
    stranger = Client()
    stranger.cookies["nexent_session"] = committed.session_cookie(tenant_a, member)
    assert stranger.get(link, **host).status_code == 404
    other = Client()
    other.cookies["nexent_session"] = committed.session_cookie(tenant_b, owner_email("beta"))
    assert other.get(link, HTTP_HOST=host_of(tenant_b)).status_code == 404


def test_a_chat_mode_agent_answers_from_retrieved_passages_and_cites_them(
    committed: Committed, make_kb: Any, tenant_a: Any, tenant_b: Any, fake_llm: FakeOpenAI
) -> None:
    """Chat mode: one model call with retrieved context. The agent's knowledge search runs on the user's message
    before the model is called, and its passages go into the model's instructions."""
    kb = make_kb(slug="expenses", chunk_size=60, chunk_overlap=0)
    document = upload(committed, tenant_a, kb, "expenses.md", HANDBOOK)
    wait_for_documents(committed, tenant_a, [document.pk])

    # when: A's chat-mode agent is asked
    answer = cited_answer(
        committed,
        tenant_a,
        fake_llm,
        "expenses",
        mode=AgentMode.CHAT,
        replies=(Reply(content="Within thirty days [1]."),),
        question="When is the zephyr refund form due?",
    )

    # then: the model was given the passages, numbered, and the answer cites the one it used
    assert answer.status == "completed", answer.error
    instructions = fake_llm.chat_requests()[0]["messages"][0]["content"]  # the answer's (the title's comes after)
    assert "[1] expenses" in instructions and "zephyr refund form must be filed within thirty days" in instructions
    citations = list(answer.citations.all())
    assert citations[0].index == 1 and citations[0].document_id == document.pk
    assert "zephyr refund form" in citations[0].text
    # and: the search is one of the answer's steps, as in tools mode
    units = committed.run(tenant_a, lambda: list(answer.units.values_list("kind", flat=True)))
    assert "tool_call" in units and "tool_result" in units

    # when: B's agent of the same name asks its own knowledge base of the same name (empty)
    fake_llm.reset()
    make_kb(tenant=tenant_b, slug="expenses")
    other = cited_answer(
        committed,
        tenant_b,
        fake_llm,
        "expenses",
        mode=AgentMode.CHAT,
        replies=(Reply(content="I do not know."),),
        question="When is the zephyr refund form due?",
    )

    # then: nothing of A's reached B's model or B's answer
    assert other.status == "completed", other.error
    assert "zephyr refund form must" not in str(fake_llm.chat_requests())
    assert list(other.citations.all()) == []
