"""Chat services against real PostgreSQL: writing the assistant message from its finished run."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django_tenants.utils import tenant_context

from accounts.models import User
from agents.models import Agent, AgentRun, ModelProvider, RunStatus, RunStep
from conftest import owner_email
from conversations.models import Conversation, Message
from conversations.services import (
    MESSAGE_SNAPSHOT_MAX_BYTES,
    message_finalize,
    message_from_snapshot,
    message_snapshot,
)
from nexent_site.testing.fake_openai import FakeOpenAI
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def test_finalizing_a_message_again_rebuilds_its_units_and_citations_once(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        # given: a pending answer whose run finished with a step and a cited final answer
        agent = Agent.objects.create(name="Finaliser", slug="finaliser")
        run = AgentRun.objects.create(
            agent=agent, spec={}, trigger="chat", status=RunStatus.SUCCEEDED, output="The answer [1].", tokens_out=4
        )
        citation = {"index": 1, "document_id": 3, "document_title": "Handbook", "chunk_id": 9, "text": "passage"}
        RunStep.objects.bulk_create(
            [
                RunStep(run=run, seq=2, type="step_started", data={"step": 1}),
                RunStep(run=run, seq=3, type="final_answer", data={"text": run.output, "citations": [citation]}),
            ]
        )
        conversation = Conversation.objects.create(user=User.objects.get(email=owner_email("alpha")), agent=agent)
        message = Message.objects.create(
            conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.PENDING, run=run
        )

        # when
        message_finalize(message=message, run=run)

        # then
        stored = Message.objects.get(pk=message.pk)
        assert (stored.status, stored.content, stored.tokens_out) == ("completed", "The answer [1].", 4)
        assert [unit.kind for unit in stored.units.all()] == ["step", "final_answer"]
        assert [(c.index, c.document_title) for c in stored.citations.all()] == [(1, "Handbook")]

        # when: finalized again (the task delivered twice), from the message as stored now
        message_finalize(message=Message.objects.get(pk=message.pk))

        # then: the same units and citations, not twice as many
        assert [unit.kind for unit in stored.units.all()] == ["step", "final_answer"]
        assert stored.citations.count() == 1


def _pending_answer_of_a_cited_run(tenant: Tenant) -> tuple[Message, AgentRun]:
    """A pending answer whose run finished with a step and a final answer citing two passages, one without a
    page."""
    agent = Agent.objects.create(name="Joined", slug="joined")
    run = AgentRun.objects.create(
        agent=agent, spec={}, trigger="chat", status=RunStatus.SUCCEEDED, output="Both [1][2].", tokens_out=3
    )
    cited = [
        {"index": 1, "document_id": 3, "document_title": "Handbook", "chunk_id": 9, "page": 4, "text": "one"},
        {"index": 2, "document_id": 5, "document_title": "Notes", "chunk_id": 11, "text": "two", "score": 0.5},
    ]
    RunStep.objects.bulk_create(
        [
            RunStep(run=run, seq=2, type="step_started", data={"step": 1}),
            RunStep(run=run, seq=3, type="final_answer", data={"text": run.output, "citations": cited}),
        ]
    )
    conversation = Conversation.objects.create(user=User.objects.get(email=owner_email("alpha")), agent=agent)
    message = Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.PENDING, run=run
    )
    return message, run


def test_the_workers_answer_is_written_by_the_statement_that_writes_its_runs_end(tenant_a: Tenant) -> None:
    """`message_finalize_with_run_end`: the answer, its units and its citations are parts of one statement (the
    run's end adds its own), and come back as `message_finalize` would leave them."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from conversations.services import message_finalize_with_run_end
    from nexent_site.statements import Statement

    with tenant_context(tenant_a):
        message, run = _pending_answer_of_a_cited_run(tenant_a)
        done: list[Message] = []
        statement = Statement()
        message_finalize_with_run_end(message=message, run=run, statement=statement, done=done.append)

        with CaptureQueriesContext(connection) as queries:
            statement.execute()

        assert len(queries.captured_queries) == 1
        assert done == [message] and (message.status, message.content) == ("completed", "Both [1][2].")
        stored = Message.objects.get(pk=message.pk)
        assert (stored.status, stored.content, stored.tokens_out) == ("completed", "Both [1][2].", 3)
        assert list(stored.units.values_list("pk", "position", "kind")) == [
            (unit.pk, unit.position, unit.kind)
            for unit in message.units.all()  # at hand, with their ids
        ]
        assert [unit.kind for unit in message.units.all()] == ["step", "final_answer"]
        assert list(stored.citations.values_list("index", "document_title", "page", "score")) == [
            (1, "Handbook", 4, 0.0),
            (2, "Notes", None, 0.5),
        ]
        assert [c.pk for c in message.citations.all()] == list(stored.citations.values_list("pk", flat=True))


def test_an_answer_closed_meanwhile_is_rebuilt_after_the_runs_end_not_added_to(tenant_a: Tenant) -> None:
    """A stop (or the watchdog) wrote the answer while the run was ending: the statement's `UPDATE` finds it no
    longer being written and writes neither units nor citations; the answer is then rebuilt from the run, as a
    second `message_finalize` does, without twice as many units."""
    from conversations.models import MessageUnit
    from conversations.services import message_finalize_with_run_end
    from nexent_site.statements import Statement

    with tenant_context(tenant_a):
        message, run = _pending_answer_of_a_cited_run(tenant_a)
        # closed meanwhile, by another writer, with what it had
        Message.objects.filter(pk=message.pk).update(status=Message.Status.STOPPED, content="Bo")
        MessageUnit.objects.create(message=message, position=0, kind="step", data={"step": 1})
        done: list[Message] = []
        statement = Statement()
        message_finalize_with_run_end(message=message, run=run, statement=statement, done=done.append)

        statement.execute()

        stored = Message.objects.get(pk=message.pk)
        assert len(done) == 1 and done[0].pk == message.pk
        assert (stored.status, stored.content) == ("completed", "Both [1][2].")
        assert list(stored.units.values_list("position", "kind")) == [(0, "step"), (1, "final_answer")]
        assert stored.citations.count() == 2


def _finished_answer(tenant: Tenant, output: str) -> Message:
    """A pending answer whose run finished with a tool call, its result and a cited final answer."""
    agent = Agent.objects.create(name="Snapshot", slug="snapshot")
    run = AgentRun.objects.create(agent=agent, spec={}, trigger="chat", status=RunStatus.SUCCEEDED, output=output)
    citation = {"index": 1, "document_id": 3, "document_title": "Handbook", "chunk_id": 9, "page": 4, "text": "x"}
    RunStep.objects.bulk_create(
        [
            RunStep(run=run, seq=2, type="step_started", data={"step": 1}),
            RunStep(run=run, seq=3, type="tool_call", data={"name": "search", "arguments": {"q": "<b>"}}),
            RunStep(run=run, seq=4, type="tool_result", data={"name": "search", "output": "found <script>"}),
            RunStep(run=run, seq=5, type="final_answer", data={"text": output, "citations": [citation]}),
        ]
    )
    conversation = Conversation.objects.create(user=User.objects.get(email=owner_email("alpha")), agent=agent)
    return Message.objects.create(
        conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.PENDING, run=run
    )


def test_a_finished_message_renders_the_same_from_its_snapshot_as_from_the_database(tenant_a: Tenant) -> None:
    from django.db import connection
    from django.template.loader import render_to_string
    from django.test.utils import CaptureQueriesContext

    with tenant_context(tenant_a):
        # given: an answer just finalized in the worker
        message = message_finalize(message=_finished_answer(tenant_a, "**The answer** [1]."))

        # when: its snapshot (sent with message_done) is rendered as the page's consumer renders it
        with CaptureQueriesContext(connection) as queries:
            snapshot = message_snapshot(message)
        from_snapshot = message_from_snapshot(json.loads(json.dumps(snapshot)))  # as it travels
        with CaptureQueriesContext(connection) as render_queries:
            html = render_to_string("conversations/_message.html", {"message": from_snapshot})

        # then: the same HTML as the message read back from the database, and no query for either
        stored = Message.objects.prefetch_related("units", "citations").get(pk=message.pk)
        assert html == render_to_string("conversations/_message.html", {"message": stored})
        assert "<strong>The answer</strong>" in html and "Handbook, page 4" in html and "&lt;script&gt;" in html
        assert len(queries) == 0 and len(render_queries) == 0


def test_a_snapshot_too_large_to_send_is_left_out(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        message = message_finalize(message=_finished_answer(tenant_a, "x" * (MESSAGE_SNAPSHOT_MAX_BYTES + 1)))
        assert message_snapshot(message) is None


def test_a_turn_looks_for_attached_files_only_in_conversations_that_have_some(tenant_a: Tenant) -> None:
    from django.core.files.uploadedfile import SimpleUploadedFile
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from agents.services.agents import agent_publish
    from conversations.services import conversation_message_send, conversation_start

    with tenant_context(tenant_a):
        user = User.objects.get(email=owner_email("alpha"))
        agent = Agent.objects.create(name="Reader", slug="reader", mode="chat")
        agent_publish(agent=agent)
        conversation = conversation_start(user=user, agent=agent)

        def send(content: str, uploads: tuple = ()) -> list[str]:
            with CaptureQueriesContext(connection) as queries:
                _, answer = conversation_message_send(
                    conversation=conversation, user=user, content=content, uploads=uploads
                )
            Message.objects.filter(pk=answer.pk).update(status=Message.Status.COMPLETED)
            Message.objects.filter(conversation=conversation).update(status=Message.Status.COMPLETED)
            return [q["sql"] for q in queries.captured_queries]

        # a conversation without files: no query for attachments
        assert not any("conversations_attachment" in sql for sql in send("hello"))
        conversation.refresh_from_db()
        assert conversation.has_attachments is False
        # its first file marks it
        send("see file", (SimpleUploadedFile("notes.txt", b"the key is 42", content_type="text/plain"),))
        conversation.refresh_from_db()
        assert conversation.has_attachments is True
        # later turns look for files (the agent gets their text in the history)
        assert any("conversations_attachment" in sql for sql in send("and?"))


def test_a_title_comes_from_the_chat_model_else_from_the_first_words(tenant_a: Tenant, fake_llm: FakeOpenAI) -> None:
    """The conversation's title: the model's suggestion (the local OpenAI-compatible test server stands in for
    the provider), the first words when the model fails, and nothing, without asking the model, when the
    conversation has a title already."""
    from agents.tests.fixtures import make_provider
    from conversations.services import conversation_title_ensure
    from nexent_site.testing.fake_openai import Reply

    with tenant_context(tenant_a):
        provider = make_provider(fake_llm)
        agent = Agent.objects.create(name="Titler", slug="titler", chat_provider=provider)
        user = User.objects.get(email=owner_email("alpha"))

        def conversation(first: str, title: str = "") -> Conversation:
            made = Conversation.objects.create(user=user, agent=agent, title=title)
            Message.objects.create(conversation=made, role=Message.Role.USER, content=first)
            return made

        named, failed, titled = (
            conversation("How do I plan a trip to Kyoto in spring with kids"),
            conversation("Summarise the quarterly budget for the board meeting next week please"),
            conversation("Anything", title="Mine"),
        )
        fake_llm.script(Reply(content='"Kyoto family trip"', title=True), Reply(status=500, title=True))

        assert conversation_title_ensure(conversation_id=str(named.pk), provider_id=provider.pk) == "Kyoto family trip"
        assert conversation_title_ensure(conversation_id=str(failed.pk), provider_id=provider.pk) == (
            "Summarise the quarterly budget for the board meeting"
        )
        asked = len(fake_llm.chat_requests())
        assert conversation_title_ensure(conversation_id=str(titled.pk), provider_id=provider.pk) == ""

        assert len(fake_llm.chat_requests()) == asked == 2
        assert fake_llm.chat_requests()[0]["messages"][1]["content"].startswith("How do I plan")
        titles = dict(Conversation.objects.filter(agent=agent).values_list("pk", "title"))
        assert titles == {
            named.pk: "Kyoto family trip",
            failed.pk: "Summarise the quarterly budget for the board meeting",
            titled.pk: "Mine",
        }


def test_titles_ask_the_provider_as_it_is_now_without_reading_it_for_each_title(
    tenant_a: Tenant, fake_llm: FakeOpenAI
) -> None:
    """Titles take the provider from the process's cache of the tenant's providers (as runs do): no query for it per
    title, and a provider changed since is asked as it is now. The local OpenAI-compatible test server stands in
    for the provider."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from agents.tests.fixtures import make_provider
    from conversations.services import conversation_title_ensure
    from nexent_site.testing.fake_openai import Reply

    with tenant_context(tenant_a):
        provider = make_provider(fake_llm, name="Titles", is_default=True)
        agent = Agent.objects.create(name="Titler", slug="titler", chat_provider=provider)
        user = User.objects.get(email=owner_email("alpha"))

        def untitled(first: str) -> str:
            made = Conversation.objects.create(user=user, agent=agent)
            Message.objects.create(conversation=made, role=Message.Role.USER, content=first)
            return str(made.pk)

        first, second, third, fourth = (untitled(f"Question number {n} about budgets") for n in range(4))
        fake_llm.script(*(Reply(content=f"Title {n}", title=True) for n in range(4)))

        assert conversation_title_ensure(conversation_id=first, provider_id=provider.pk) == "Title 0"
        with CaptureQueriesContext(connection) as queries:
            assert conversation_title_ensure(conversation_id=second, provider_id=provider.pk) == "Title 1"
        assert not [q for q in queries.captured_queries if "agents_modelprovider" in q["sql"]]

        provider.model_name = "renamed-model"
        provider.save()
        assert conversation_title_ensure(conversation_id=third, provider_id=provider.pk) == "Title 2"
        # a provider gone: the tenant's default one
        assert conversation_title_ensure(conversation_id=fourth, provider_id=provider.pk + 1000) == "Title 3"

    models = [body["model"] for body in fake_llm.chat_requests()]
    assert models == ["fake-model", "fake-model", "renamed-model", "renamed-model"]


def test_a_title_in_tenant_b_never_asks_tenant_a_provider(
    tenant_a: Tenant, tenant_b: Tenant, fake_llm: FakeOpenAI
) -> None:
    """The process's cache of providers is the tenant's own: B's title, even naming A's provider's id, asks B's
    provider (the local OpenAI-compatible test server stands in for both)."""
    from agents.tests.fixtures import make_provider
    from conversations.services import conversation_title_ensure
    from nexent_site.testing.fake_openai import Reply

    def untitled(tenant: Tenant, slug: str, model: str) -> tuple[str, int]:
        with tenant_context(tenant):
            provider = make_provider(fake_llm, name=f"Titles of {slug}", model_name=model, is_default=True)
            agent = Agent.objects.create(name="Titler", slug="titler", chat_provider=provider)
            made = Conversation.objects.create(user=User.objects.get(email=owner_email(slug)), agent=agent)
            Message.objects.create(conversation=made, role=Message.Role.USER, content=f"A question in {slug}")
            return str(made.pk), provider.pk

    theirs, their_provider = untitled(tenant_a, "alpha", "model-of-a")
    mine, _ = untitled(tenant_b, "beta", "model-of-b")
    fake_llm.script(Reply(content="A's title", title=True), Reply(content="B's title", title=True))

    with tenant_context(tenant_a):
        assert conversation_title_ensure(conversation_id=theirs, provider_id=their_provider) == "A's title"
    with tenant_context(tenant_b):
        assert conversation_title_ensure(conversation_id=mine, provider_id=their_provider) == "B's title"
        # B's own provider of that id if it has one (ids are each schema's own), else B's default
        same_id = ModelProvider.objects.filter(pk=their_provider, kind="chat").first()
        expected = same_id.model_name if same_id else "model-of-b"

    assert [body["model"] for body in fake_llm.chat_requests()] == ["model-of-a", expected]
    assert expected != "model-of-a"


def test_a_title_task_in_tenant_b_cannot_title_tenant_a_conversation(
    tenant_a: Tenant, tenant_b: Tenant, fake_llm: FakeOpenAI
) -> None:
    """The task runs in the schema of the tenant that enqueued it: A's conversation id means nothing in B."""
    from conversations.services import conversation_title_ensure

    with tenant_context(tenant_a):
        agent = Agent.objects.create(name="Private", slug="private")
        theirs = Conversation.objects.create(user=User.objects.get(email=owner_email("alpha")), agent=agent)
        Message.objects.create(conversation=theirs, role=Message.Role.USER, content="A's secret plans")

    with tenant_context(tenant_b):
        assert conversation_title_ensure(conversation_id=str(theirs.pk)) == ""

    assert fake_llm.chat_requests() == []
    with tenant_context(tenant_a):
        assert Conversation.objects.get(pk=theirs.pk).title == ""


def _turn_sent(fake_llm: FakeOpenAI, slug: str, *, reply: str) -> Message:
    """In the current tenant: a chat agent on the local OpenAI-compatible test server (standing in for the
    provider), published, and a turn sent to it by alpha's owner, the model scripted to answer `reply`. Returns
    the turn's pending answer (with its run)."""
    from agents.services.agents import agent_publish
    from agents.tests.fixtures import make_provider
    from conversations.services import conversation_message_send, conversation_start
    from nexent_site.testing.fake_openai import Reply

    user = User.objects.get(email=owner_email("alpha"))
    agent = Agent.objects.create(name=slug.title(), slug=slug, mode="chat", chat_provider=make_provider(fake_llm))
    agent_publish(agent=agent)
    conversation = conversation_start(user=user, agent=agent)
    _, answer = conversation_message_send(conversation=conversation, user=user, content="hello")
    fake_llm.script(Reply(content=reply))
    return answer


def test_a_turn_finalizes_its_message_from_the_steps_its_run_just_wrote(tenant_a: Tenant, fake_llm: FakeOpenAI) -> None:
    """The worker's path: the run executed (against the local OpenAI-compatible test server standing in for the
    provider), then its message written from the steps the run wrote, without reading them back."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from agents.services.runs import run_execute

    with tenant_context(tenant_a):
        answer = _turn_sent(fake_llm, "turner", reply="Hello back.")
        run = run_execute(run_id=str(answer.run_id), run=answer.run)

        with CaptureQueriesContext(connection) as queries:
            message = message_finalize(message=answer, run=run)

        assert not any('FROM "agents_runstep"' in q["sql"] for q in queries.captured_queries)
        assert (message.status, message.content) == ("completed", "Hello back.")
        stored = Message.objects.get(pk=message.pk)
        assert [unit.kind for unit in stored.units.all()] == ["step", "final_answer"]
        assert [unit.kind for unit in stored.units.all()] == [
            unit.kind
            for unit in message_finalize(message=stored).units.all()  # again, read from the database
        ]


def test_a_turns_end_is_one_statement_from_the_runs_last_steps_to_its_answers_units(
    tenant_a: Tenant, fake_llm: FakeOpenAI
) -> None:
    """The worker's path, against the local OpenAI-compatible test server standing in for the provider: the
    run's steps, its row, its usage and the answer with its units are written by one statement (one round
    trip)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from agents.services.runs import run_execute
    from conversations.services import message_finalize_with_run_end

    with tenant_context(tenant_a):
        answer = _turn_sent(fake_llm, "ender", reply="Ended well.")
        done: list[Message] = []

        with CaptureQueriesContext(connection) as queries:
            run_execute(
                run_id=str(answer.run_id),
                run=answer.run,
                on_finish=lambda finished, end: message_finalize_with_run_end(
                    message=answer, run=finished, statement=end, done=done.append
                ),
            )

        writes = [q["sql"] for q in queries.captured_queries if 'UPDATE "conversations_message"' in q["sql"]]
        assert len(writes) == 1
        for part in ('UPDATE "agents_agentrun"', 'INSERT INTO "agents_usagerecord"', '"conversations_messageunit"'):
            assert part in writes[0]
        stored = Message.objects.get(pk=answer.pk)
        assert done and (stored.status, stored.content) == ("completed", "Ended well.")
        assert [unit.kind for unit in stored.units.all()] == ["step", "final_answer"]
        assert stored.run.status == RunStatus.SUCCEEDED and stored.run.usage.tokens_out == stored.run.tokens_out


def test_a_conversation_without_files_gives_the_agent_the_same_history_from_three_columns(tenant_a: Tenant) -> None:
    """Its turns read role, content and status instead of model instances: the history must be the one the model
    instances give (completed messages with text, in order), and an answer still being written must keep
    refusing a new turn."""
    from conversations.services import _history, _turn_history, _with_attachments

    with tenant_context(tenant_a):
        user = User.objects.get(email=owner_email("alpha"))
        agent = Agent.objects.create(name="Historian", slug="historian", mode="chat")
        conversation = Conversation.objects.create(user=user, agent=agent)
        for role, content, status in [
            ("user", "first question", "completed"),
            ("assistant", "first answer", "completed"),
            ("user", "second question", "completed"),
            ("assistant", "half an answer", "stopped"),
            ("assistant", "", "completed"),
            ("assistant", "an error", "failed"),
            ("user", "third question", "completed"),
        ]:
            Message.objects.create(conversation=conversation, role=role, content=content, status=status)
        ordered = conversation.messages.order_by("created_at", "id")

        history, busy, unread = _turn_history(conversation)

        assert history == _history(_with_attachments(conversation, ordered))
        assert [m["content"] for m in history] == [
            "first question",
            "first answer",
            "second question",
            "third question",
        ]
        assert (busy, unread) == (False, False)
        Message.objects.create(conversation=conversation, role="assistant", status="streaming")
        assert _turn_history(conversation)[1] is True


def test_a_conversation_goes_to_the_top_of_its_users_list_once_a_message_is_sent(
    tenant_a: Tenant, own_queue: str, django_capture_on_commit_callbacks: Any
) -> None:
    """The list is newest-activity first. The move is written after the turn's task is sent (off the path to the
    first token), once the message is committed; a message refused (here: sent while an answer is being written)
    moves nothing."""
    from agents.services.agents import agent_publish
    from conversations.selectors import conversations_for_user
    from conversations.services import conversation_message_send, conversation_start
    from nexent_site.errors import ApplicationError

    with tenant_context(tenant_a):
        user = User.objects.get(email=owner_email("alpha"))
        agent = Agent.objects.create(name="Mover", slug="mover", mode="chat")
        agent_publish(agent=agent)
        older = conversation_start(user=user, agent=agent)
        newer = conversation_start(user=user, agent=agent)
        Conversation.objects.filter(pk=older.pk).update(updated_at=newer.updated_at - timedelta(minutes=5))
        assert [c.pk for c in conversations_for_user(user=user)][:2] == [newer.pk, older.pk]

        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            conversation_message_send(conversation=older, user=user, content="hello again")
        assert len(callbacks) == 2  # the turn's task first, then the move
        assert [c.pk for c in conversations_for_user(user=user)][:2] == [older.pk, newer.pk]

        Conversation.objects.filter(pk=older.pk).update(updated_at=newer.updated_at - timedelta(minutes=5))
        with pytest.raises(ApplicationError), django_capture_on_commit_callbacks(execute=True):
            conversation_message_send(conversation=older, user=user, content="and again")  # busy
        assert [c.pk for c in conversations_for_user(user=user)][:2] == [newer.pk, older.pk]


def _chat_agent(slug: str) -> tuple[User, Conversation]:
    from agents.services.agents import agent_publish
    from conversations.services import conversation_start

    user = User.objects.get(email=owner_email("alpha"))
    agent = Agent.objects.create(name=slug.title(), slug=slug, mode="chat")
    agent_publish(agent=agent)
    return user, conversation_start(user=user, agent=agent)


def _forget_agent(slug: str) -> None:
    Conversation.objects.filter(agent__slug=slug).delete()
    AgentRun.objects.filter(agent__slug=slug).delete()
    Agent.objects.filter(slug=slug).delete()


def test_a_message_is_saved_in_two_statements_before_the_worker_is_told(
    committed: Any, tenant_a: Tenant, own_queue: str
) -> None:
    """The common turn (no files), as the web sends it (autocommit, on a connection of its own): the conversation
    with its messages in one query, then the run and both messages in one `INSERT`, then the turn's task; the
    conversation's move to the top of its user's list comes after."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from conversations.services import conversation_message_send

    committed.on_teardown(tenant_a, lambda: _forget_agent("two"))

    def send() -> tuple[list[str], Message, Message, Conversation]:
        user, conversation = _chat_agent("two")
        Message.objects.create(conversation=conversation, role=Message.Role.USER, content="earlier question")
        Message.objects.create(conversation=conversation, role=Message.Role.ASSISTANT, content="earlier answer")
        Message.objects.create(conversation=conversation, role=Message.Role.ASSISTANT, status="failed", content="x")
        with CaptureQueriesContext(connection) as queries:
            question, answer = conversation_message_send(conversation=conversation, user=user, content=" hello ")
        return [q["sql"] for q in queries.captured_queries], question, answer, conversation

    statements, question, answer, conversation = committed.run(tenant_a, send)

    assert [sql.split()[0] for sql in statements] == ["SELECT", "WITH", "UPDATE"], statements
    assert 'INSERT INTO "agents_agentrun"' in statements[1] and 'INSERT INTO "conversations_message"' in statements[1]

    def stored() -> tuple[list, AgentRun]:
        rows = list(conversation.messages.order_by("created_at", "id").values_list("pk", "role", "status", "run_id"))
        return rows, AgentRun.objects.get(pk=answer.run_id)

    rows, run = committed.run(tenant_a, stored)
    assert rows[-2:] == [(question.pk, "user", "completed", None), (answer.pk, "assistant", "pending", run.pk)]
    # the history the agent gets: completed messages with text, then the new one
    assert run.input == [
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "hello"},
    ]
    assert (run.status, run.trigger, run.user_email, run.spec["version"]) == ("queued", "chat", owner_email("alpha"), 1)
    assert run.deadline_at is not None and question.created_at <= answer.created_at


def test_a_second_send_that_raced_past_the_busy_check_is_refused_and_writes_nothing(
    committed: Any, tenant_a: Tenant, own_queue: str
) -> None:
    """Two sends at once both read the conversation before either wrote: the one-active-answer constraint refuses
    the second one's `INSERT`, whole: no run, no messages."""
    from conversations.services import _start_turn, conversation_message_send
    from nexent_site.errors import ApplicationError

    committed.on_teardown(tenant_a, lambda: _forget_agent("racer"))

    def race() -> tuple[tuple[int, int], tuple[int, int], ApplicationError, ApplicationError]:
        user, conversation = _chat_agent("racer")
        conversation_message_send(conversation=conversation, user=user, content="first")
        before = (AgentRun.objects.count(), Message.objects.count())
        second = Message(conversation=conversation, role=Message.Role.USER, content="second")
        with pytest.raises(ApplicationError) as raced:
            _start_turn(
                conversation=conversation,
                user=user,
                history=[{"role": "user", "content": "second"}],
                attachments=False,
                user_message=second,
            )
        with pytest.raises(ApplicationError) as checked:
            conversation_message_send(conversation=conversation, user=user, content="third")
        return before, (AgentRun.objects.count(), Message.objects.count()), raced.value, checked.value

    before, after, raced, checked = committed.run(tenant_a, race)

    assert (raced.code, raced.status) == ("busy", 409) and (checked.code, checked.status) == ("busy", 409)
    assert after == before


def test_a_message_to_another_tenants_conversation_is_refused_as_not_found(tenant_a: Tenant, tenant_b: Tenant) -> None:
    """The send reads the conversation in the current tenant's schema only: tenant A's conversation, sent to from
    tenant B (by a user of B), is not found there, and nothing is written in either."""
    from conversations.services import conversation_message_send
    from nexent_site.errors import ApplicationError

    with tenant_context(tenant_a):
        _, conversation = _chat_agent("isolated")
        messages_in_a = Message.objects.count()
    with tenant_context(tenant_b):
        intruder = User.objects.get(email=owner_email("beta"))
        with pytest.raises(ApplicationError) as refused:
            conversation_message_send(conversation=conversation, user=intruder, content="hello from B")
        assert (refused.value.code, refused.value.status) == ("not_found", 404)
        assert not Message.objects.filter(content="hello from B").exists()
    with tenant_context(tenant_a):
        assert Message.objects.count() == messages_in_a
