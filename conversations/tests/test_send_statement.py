"""A chat turn's send in one statement (conversations.send_statement), against real PostgreSQL and Redis: the
same rows and history as the reading path, nothing written when the conversation is not as the process thinks,
and never another schema's agent version."""

from __future__ import annotations

import base64
import json
import threading
import time
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_tenants.utils import tenant_context

from accounts.models import User
from agents.models import Agent, AgentRun, AgentVersion
from agents.services.agents import agent_publish
from conftest import owner_email
from conversations.models import Conversation, Message
from conversations.send_statement import _published, published_version_known
from conversations.services import conversation_history, conversation_message_send, conversation_start
from conversations.tests.test_services import _chat_agent, _forget_agent
from nexent_site.errors import ApplicationError
from nexent_site.redis_pool import redis_client
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def _statements(send: Any) -> tuple[list[str], Any]:
    """The first word of each statement `send()` ran (but the month's usage, read once in a while for the quota),
    and what it returned."""
    with CaptureQueriesContext(connection) as queries:
        result = send()
    sql = [q["sql"] for q in queries.captured_queries if "agents_usagerecord" not in q["sql"]]
    return [statement.split()[0] for statement in sql], result


def _queued_turns(queue: str) -> list[list]:
    """The positional arguments (message id, attachments, titled) of the chat turns waiting in `queue`, oldest
    first."""
    raw = redis_client().lrange(queue, 0, -1)
    return [json.loads(base64.b64decode(json.loads(m)["body"]))[0] for m in reversed(raw)]


def _answered(message: Message, content: str) -> None:
    Message.objects.filter(pk=message.pk).update(status=Message.Status.COMPLETED, content=content)


def test_a_turn_of_an_agent_this_process_knows_is_saved_in_one_statement(
    committed: Any, tenant_a: Tenant, own_queue: str
) -> None:
    """The first turn reads the conversation and notes the agent's published version; the next one writes the run,
    both messages, moves the conversation to the top of its user's list and reads the title in one statement, with
    the history the reading path gives (completed messages with text, in order, then the new one)."""
    committed.on_teardown(tenant_a, lambda: _forget_agent("single"))

    def turns() -> dict:
        user, conversation = _chat_agent("single")
        first, (_, first_answer) = _statements(
            lambda: conversation_message_send(conversation=conversation, user=user, content="q1")
        )
        _answered(first_answer, "first answer")
        Message.objects.create(conversation=conversation, role="assistant", status="failed", content="an error")
        Message.objects.create(conversation=conversation, role="assistant", status="completed", content="")
        Conversation.objects.filter(pk=conversation.pk).update(
            title="Named", updated_at=timezone.now() - timedelta(hours=1)
        )
        before = timezone.now()
        expected = [*conversation_history(conversation), {"role": "user", "content": "q2"}]
        second, (question, answer) = _statements(
            lambda: conversation_message_send(conversation=conversation, user=user, content=" q2 ")
        )
        version = Agent.objects.get(slug="single").published_version
        return {
            "first": first,
            "second": second,
            "expected": expected,
            "question": question,
            "answer": answer,
            "rows": list(conversation.messages.order_by("created_at", "id").values_list("pk", "role", "status")),
            "run": AgentRun.objects.get(pk=answer.run_id),
            "moved": Conversation.objects.get(pk=conversation.pk).updated_at >= before,
            "version": (version.pk, {**version.spec, "version": version.number}),
        }

    sent = committed.run(tenant_a, turns)

    assert sent["first"] == ["SELECT", "WITH", "UPDATE"]
    assert sent["second"] == ["WITH"]
    assert sent["moved"]
    run, question, answer = sent["run"], sent["question"], sent["answer"]
    assert (
        run.input
        == sent["expected"]
        == [
            {"role": "user", "content": "q1"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "q2"},
        ]
    )
    assert sent["rows"][-2:] == [(question.pk, "user", "completed"), (answer.pk, "assistant", "pending")]
    assert (run.version_id, run.spec) == sent["version"]
    assert (run.status, run.trigger, run.user_email) == ("queued", "chat", owner_email("alpha"))
    assert run.deadline_at is not None and answer.run_id == run.pk and question.pk < answer.pk
    # the worker is told the conversation has a title now (it asks for one only after a first answer)
    assert [args[1:] for args in _queued_turns(own_queue)] == [[False, False], [False, True]]


@pytest.mark.parametrize("change", ["archived", "answer being written", "another user", "files attached"])
def test_a_turn_whose_conversation_changed_under_the_process_reads_it_and_is_refused_or_sent(
    committed: Any, tenant_a: Tenant, own_queue: str, change: str
) -> None:
    """The version is known, but the conversation is not as a plain new turn needs it: the statement writes
    nothing, and the reading path refuses the message (archived, busy, not found) or sends it its own way (a
    conversation with files, in a transaction)."""
    committed.on_teardown(tenant_a, lambda: _forget_agent("changed"))
    stranger = committed.user(tenant_a, email="stranger@alpha.test")

    def turn() -> tuple[list[str], Any, int]:
        user, conversation = _chat_agent("changed")
        _answered(conversation_message_send(conversation=conversation, user=user, content="q1")[1], "a1")
        assert published_version_known(conversation.agent_id) is not None
        if change == "archived":
            Conversation.objects.filter(pk=conversation.pk).update(archived=True)
        elif change == "answer being written":
            Message.objects.create(conversation=conversation, role="assistant", status="streaming")
        elif change == "another user":
            user = stranger
        else:
            Conversation.objects.filter(pk=conversation.pk).update(has_attachments=True)
        written = Message.objects.count()
        try:
            statements, result = _statements(
                lambda: conversation_message_send(conversation=conversation, user=user, content="q2")
            )
        except ApplicationError as exc:
            return [], exc.code, Message.objects.count() - written
        return statements, result, Message.objects.count() - written

    statements, result, written = committed.run(tenant_a, turn)

    if change == "files attached":  # read, then sent in a transaction with the conversation locked
        assert statements[:2] == ["WITH", "SELECT"] and statements.count("SELECT") >= 3 and written == 2
    else:
        assert result == {"archived": "archived", "answer being written": "busy", "another user": "not_found"}[change]
        assert written == 0


def test_a_turn_after_the_agent_is_published_anew_runs_the_new_version(
    committed: Any, tenant_a: Tenant, own_queue: str
) -> None:
    """The process knew the agent's first version; it was published again since: the statement writes nothing, the
    turn reads the agent and runs version 2, and the next turn is back to one statement."""
    committed.on_teardown(tenant_a, lambda: _forget_agent("republished"))

    def turns() -> tuple[list[str], list[str], dict, dict]:
        user, conversation = _chat_agent("republished")
        _answered(conversation_message_send(conversation=conversation, user=user, content="q1")[1], "a1")
        agent = Agent.objects.get(slug="republished")
        agent.description = "Second edition"
        agent.save()
        agent_publish(agent=agent)
        second, (_, answer) = _statements(
            lambda: conversation_message_send(conversation=conversation, user=user, content="q2")
        )
        _answered(answer, "a2")
        third, (_, again) = _statements(
            lambda: conversation_message_send(conversation=conversation, user=user, content="q3")
        )
        return second, third, answer.run.spec, AgentRun.objects.get(pk=again.run_id).spec

    second, third, spec, next_spec = committed.run(tenant_a, turns)

    assert second == ["WITH", "SELECT", "WITH", "UPDATE"]
    assert third == ["WITH"]
    assert (spec["version"], spec["description"]) == (2, "Second edition")
    assert next_spec == spec


def test_another_schemas_version_held_under_this_schemas_ids_is_never_run(
    committed: Any, tenant_a: Tenant, tenant_b: Tenant, own_queue: str
) -> None:
    """A schema made anew under the same name starts its ids again: the process may hold, under tenant B's agent
    and version ids, a version whose spec is another one's (here: tenant A's, instructions and all). Its spec does
    not match B's stored version, so B's turn reads its own and runs that."""
    committed.on_teardown(tenant_a, lambda: _forget_agent("secretive"))
    committed.on_teardown(tenant_b, lambda: _forget_agent("plain"))

    def a_version() -> AgentVersion:
        _, conversation = _chat_agent("secretive")
        agent = conversation.agent
        agent.role_prompt = "Tenant A's secret role"
        agent.save()
        agent_publish(agent=agent)
        return Agent.objects.get(pk=agent.pk).published_version

    def b_turn(secret: AgentVersion) -> tuple[list[str], dict, dict]:
        user = User.objects.get(email=owner_email("beta"))
        agent = Agent.objects.create(name="Plain", slug="plain", mode="chat")
        agent_publish(agent=agent)
        version = Agent.objects.get(pk=agent.pk).published_version
        conversation = conversation_start(user=user, agent=agent)
        # the process "remembers" tenant A's spec under B's ids
        _published[(connection.schema_name, agent.pk)] = AgentVersion(
            pk=version.pk, agent_id=agent.pk, number=version.number, spec=secret.spec
        )
        statements, (_, answer) = _statements(
            lambda: conversation_message_send(conversation=conversation, user=user, content="hello")
        )
        return statements, AgentRun.objects.get(pk=answer.run_id).spec, {**version.spec, "version": version.number}

    secret = committed.run(tenant_a, a_version)
    statements, spec, own = committed.run(tenant_b, lambda: b_turn(secret))

    assert statements == ["WITH", "SELECT", "WITH", "UPDATE"]
    assert spec == own and "Tenant A's secret role" not in json.dumps(spec)


def test_an_answer_finished_while_the_next_turn_is_written_is_in_its_history_or_the_turn_is_refused(
    committed: Any, tenant_a: Tenant, own_queue: str
) -> None:
    """The worker writing the previous answer commits while the next turn's statement runs. The statement's
    snapshot still has the answer being written: it must not wait for the worker's commit (the one-active-answer
    constraint would make it) and then start the turn without that answer in its history. Here the worker's
    transaction is held open across the send."""
    committed.on_teardown(tenant_a, lambda: _forget_agent("overlap"))
    user, conversation = committed.run(tenant_a, lambda: _chat_agent("overlap"))
    answer = committed.run(
        tenant_a, lambda: conversation_message_send(conversation=conversation, user=user, content="q1")[1]
    )
    held, sent = threading.Event(), threading.Event()

    def finish_answer() -> None:
        with transaction.atomic():
            _answered(answer, "the late answer")
            held.set()
            sent.wait(timeout=1.0)  # the send, if it does not wait for this commit; else a second

    def send() -> Any:
        held.wait(timeout=10)
        try:
            return conversation_message_send(conversation=conversation, user=user, content="q2")[1].run.input
        except ApplicationError as exc:
            return exc.code
        finally:
            sent.set()

    worker = threading.Thread(target=lambda: committed.run(tenant_a, finish_answer))
    worker.start()
    outcome = committed.run(tenant_a, send)
    worker.join()

    assert outcome == "busy" or {"role": "assistant", "content": "the late answer"} in outcome, outcome


def test_another_tenants_conversation_is_not_written_to_even_with_its_agents_version_known(
    committed: Any, tenant_a: Tenant, tenant_b: Tenant, own_queue: str
) -> None:
    """Tenant A's conversation, sent to from tenant B by a user of B, while this process knows a version under the
    conversation's agent id in B's schema: the statement runs in B's schema, finds no such conversation and writes
    nothing; the reading path refuses it as not found. Neither tenant gets a message, and A's conversation is not
    moved."""
    committed.on_teardown(tenant_a, lambda: _forget_agent("guarded"))
    committed.on_teardown(tenant_b, lambda: _forget_agent("bystander"))

    def a_conversation() -> tuple[Conversation, int]:
        _, conversation = _chat_agent("guarded")
        return conversation, Message.objects.count()

    def b_send(conversation: Conversation) -> tuple[list[str], str, int]:
        agent = Agent.objects.create(name="Bystander", slug="bystander", mode="chat")
        agent_publish(agent=agent)
        _published[(connection.schema_name, conversation.agent_id)] = Agent.objects.get(pk=agent.pk).published_version
        intruder = User.objects.get(email=owner_email("beta"))
        before = Message.objects.count()
        with CaptureQueriesContext(connection) as queries, pytest.raises(ApplicationError) as refused:
            conversation_message_send(conversation=conversation, user=intruder, content="hello from B")
        statements = [q["sql"].split()[0] for q in queries.captured_queries if "agents_usagerecord" not in q["sql"]]
        return statements, refused.value.code, Message.objects.count() - before

    conversation, messages_in_a = committed.run(tenant_a, a_conversation)
    statements, code, written_in_b = committed.run(tenant_b, lambda: b_send(conversation))

    assert statements[:2] == ["WITH", "SELECT"] and code == "not_found" and written_in_b == 0
    assert committed.run(tenant_a, Message.objects.count) == messages_in_a
    # nor moved to the top of its user's list
    moved = committed.run(tenant_a, lambda: Conversation.objects.get(pk=conversation.pk).updated_at)
    assert moved == conversation.updated_at


def test_the_statement_is_one_psycopg_reuses(committed: Any, tenant_a: Tenant, own_queue: str) -> None:
    """psycopg parses a statement's SQL for its parameters on every execution (prepared or not), unless the
    statement has at most 50 parameters and 4,096 characters (then it keeps the parse): the send's statement must
    stay within both, or every send pays the parse again (0.16 ms of CPU on slow vCPUs). The second and third sends
    in one statement each, the third's SQL found in psycopg's cache."""
    from psycopg._queries import _query2pg  # psycopg's cache of its parses (its own, private)

    committed.on_teardown(tenant_a, lambda: _forget_agent("reused"))

    def turns() -> tuple[list[str], Any, Any]:
        user, conversation = _chat_agent("reused")
        _, (_, answer) = _statements(
            lambda: conversation_message_send(conversation=conversation, user=user, content="q1")
        )
        _answered(answer, "a1")
        second, (_, answer) = _statements(
            lambda: conversation_message_send(conversation=conversation, user=user, content="q2")
        )
        _answered(answer, "a2")
        before = _query2pg.cache_info()
        third, _ = _statements(lambda: conversation_message_send(conversation=conversation, user=user, content="q3"))
        return second + third, before, _query2pg.cache_info()

    statements, before, after = committed.run(tenant_a, turns)

    assert statements == ["WITH", "WITH"]
    assert (after.hits - before.hits, after.misses - before.misses) == (1, 0)


def _first_words(queries: CaptureQueriesContext) -> list[str]:
    """The first word of each statement but the month's usage (read once in a while) and the search_path's SET."""
    words = [q["sql"].split()[0] for q in queries.captured_queries if "agents_usagerecord" not in q["sql"]]
    return [word for word in words if word != "SET"]


def _prepared_sends() -> int:
    """How many statements prepared on this connection are the send's (PostgreSQL's own list)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'WITH messages AS%%'")
        return cursor.fetchone()[0]


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "DATABASE_PREPARED_STATEMENTS off"])
def test_on_one_connection_each_tenants_turns_are_written_in_its_own_schema(
    committed: Any, tenant_a: Tenant, tenant_b: Tenant, own_queue: str, prepared: bool
) -> None:
    """The statement is bound on the server and prepared on its connection by its first run; PostgreSQL parses a
    prepared statement again when the connection's search_path changes. On one connection, tenant A's turns, then
    tenant B's, then A's again: each in one statement, with its own conversation's history, written in its own
    schema; one statement prepared on the connection for all three. With prepared statements turned off (the
    connection's `prepare_threshold` None, as `DATABASE_PREPARED_STATEMENTS=false` makes it) the same turns are
    written the same way, and nothing is prepared."""
    committed.on_teardown(tenant_a, lambda: _forget_agent("shared-a"))
    committed.on_teardown(tenant_b, lambda: _forget_agent("shared-b"))

    def turn(user: User, conversation: Conversation, content: str) -> tuple[list[str], Message]:
        statements, (_, answer) = _statements(
            lambda: conversation_message_send(conversation=conversation, user=user, content=content)
        )
        _answered(answer, f"answer to {content}")
        return statements, answer

    def b_start() -> tuple[User, Conversation]:
        agent = Agent.objects.create(name="Shared B", slug="shared-b", mode="chat")
        agent_publish(agent=agent)
        user = User.objects.get(email=owner_email("beta"))
        return user, conversation_start(user=user, agent=agent)

    def turns() -> dict:
        connection.ensure_connection()
        if not prepared:
            connection.connection.prepare_threshold = None
        a_user, a_conversation = _chat_agent("shared-a")
        turn(a_user, a_conversation, "a1")  # reads the conversation: the agent's version is noted
        a_second, _ = turn(a_user, a_conversation, "a2")
        with tenant_context(tenant_b):
            b_user, b_conversation = b_start()
            turn(b_user, b_conversation, "b1")
            b_second, b_answer = turn(b_user, b_conversation, "b2")
            b_rows = Message.objects.filter(conversation=b_conversation).count()
            b_input = AgentRun.objects.get(pk=b_answer.run_id).input
        a_third, a_answer = turn(a_user, a_conversation, "a3")
        return {
            "statements": [a_second, b_second, a_third],
            "prepared": _prepared_sends(),
            "a_rows": Message.objects.filter(conversation=a_conversation).count(),
            "a_input": AgentRun.objects.get(pk=a_answer.run_id).input,
            "b_rows": b_rows,
            "b_input": b_input,
            "b_in_a": Message.objects.filter(conversation_id=b_conversation.pk).count(),
        }

    sent = committed.run(tenant_a, turns)

    # back in A, the connection's search_path is set again before the statement
    assert sent["statements"] == [["WITH"], ["WITH"], ["SET", "WITH"]]
    assert sent["prepared"] == (1 if prepared else 0)
    assert (sent["a_rows"], sent["b_rows"], sent["b_in_a"]) == (6, 4, 0)
    assert [m["content"] for m in sent["a_input"]] == ["a1", "answer to a1", "a2", "answer to a2", "a3"]
    assert [m["content"] for m in sent["b_input"]] == ["b1", "answer to b1", "b2"]


def test_a_send_racing_another_answers_insert_is_refused_and_its_connection_sends_the_next(
    committed: Any, tenant_a: Tenant, own_queue: str
) -> None:
    """Another answer is inserted and not yet committed when the send's prepared statement runs: the statement's
    snapshot has no answer being written, so it writes, waits for that commit on the one-active-answer index, and
    is refused by the constraint: busy, nothing written, and no second query. The connection's prepared statement
    (prepared by a send to another conversation first) then sends the next turn as before."""
    committed.on_teardown(tenant_a, lambda: _forget_agent("racing"))
    user, conversation = committed.run(tenant_a, lambda: _chat_agent("racing"))
    first = committed.run(
        tenant_a, lambda: conversation_message_send(conversation=conversation, user=user, content="q1")
    )
    committed.run(tenant_a, lambda: _answered(first[1], "a1"))
    inserted, other = threading.Event(), {}

    def other_answer() -> None:
        with transaction.atomic():
            other["answer"] = Message.objects.create(
                conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.PENDING
            )
            inserted.set()
            with connection.cursor() as cursor:  # commit once the send waits on this row's lock
                for _ in range(200):
                    cursor.execute("SELECT pg_stat_clear_snapshot()")
                    cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
                    if cursor.fetchone()[0]:
                        other["waited"] = True
                        break
                    time.sleep(0.02)

    def sends() -> dict:
        warm = conversation_start(user=user, agent=conversation.agent)  # the statement prepared on this connection
        conversation_message_send(conversation=warm, user=user, content="first on this connection")
        inserted.wait(timeout=10)
        with CaptureQueriesContext(connection) as raced, pytest.raises(ApplicationError) as refused:
            conversation_message_send(conversation=conversation, user=user, content="q2")
        with CaptureQueriesContext(connection) as again, pytest.raises(ApplicationError):
            conversation_message_send(conversation=conversation, user=user, content="q2")
        _answered(other["answer"], "the other answer")
        then, (_, answer) = _statements(
            lambda: conversation_message_send(conversation=conversation, user=user, content="q3")
        )
        return {
            "refused": refused.value.code,
            "raced": _first_words(raced),
            "again": _first_words(again)[:2],
            "then": then,
            "input": [m["content"] for m in AgentRun.objects.get(pk=answer.run_id).input],
            "prepared": _prepared_sends(),
        }

    racer = threading.Thread(target=lambda: committed.run(tenant_a, other_answer))
    racer.start()
    sent = committed.run(tenant_a, sends)
    racer.join()

    assert other.get("waited") and sent["refused"] == "busy" and sent["raced"] == ["WITH"]
    # the retry finds the other answer being written (the statement writes nothing, the reading path refuses it)
    assert sent["again"] == ["WITH", "SELECT"]
    assert sent["then"] == ["WITH"] and sent["prepared"] == 1
    assert sent["input"] == ["q1", "a1", "the other answer", "q3"]
