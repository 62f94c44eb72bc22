"""Answers whose turn's task never came: a stop while the run was queued, a lost worker, a deleted run. Real
PostgreSQL and Redis. In these tests the turn's task is never delivered: it is enqueued on commit, and each test
runs in a transaction that is rolled back, which is what a task lost with its worker looks like from the
database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from channels.layers import get_channel_layer
from django.db import connection
from django.utils import timezone
from django_tenants.utils import tenant_context

from accounts.models import User
from agents.models import Agent, AgentRun, RunStatus, RunStep
from agents.runtime.streams import group_message
from conftest import owner_email
from conversations.models import Conversation, Message
from conversations.services import (
    conversation_group_name,
    conversation_message_send,
    conversation_start,
    message_finalize,
    message_stop,
    messages_watchdog,
)
from nexent_site.redis_pool import redis_client
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def _conversation(slug: str) -> tuple[User, Conversation]:
    """A conversation of the current tenant's owner with a published chat agent."""
    from agents.services.agents import agent_publish

    user = User.objects.get(email=owner_email(connection.tenant.schema_name))
    agent = Agent.objects.create(name=slug.title(), slug=slug, mode="chat")
    agent_publish(agent=agent)
    return user, conversation_start(user=user, agent=agent)


def _run_ended(message: Message, status: str, error: str, ago_s: float) -> None:
    """As the runs' watchdog leaves a run whose worker was lost."""
    AgentRun.objects.filter(pk=message.run_id).update(
        status=status, error=error, finished_at=timezone.now() - timedelta(seconds=ago_s)
    )


@pytest.fixture
def notices(tenant_a: Tenant) -> Iterator[Callable]:
    """What the conversation's open pages are told, read from the channel layer's own Redis channel."""
    subscriptions = []

    def listen(conversation: Conversation):
        group = conversation_group_name(tenant_a.schema_name, str(conversation.pk))
        pubsub = redis_client().pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(group_message(group, {})[0])
        pubsub.get_message(timeout=1)  # the subscription is in place
        subscriptions.append(pubsub)

        def received() -> list[dict]:
            frames = []
            while (raw := pubsub.get_message(timeout=0.5)) is not None:
                frames.append(get_channel_layer().deserialize(raw["data"])["payload"])
            return frames

        return received

    yield listen
    for pubsub in subscriptions:
        pubsub.close()


def test_an_answer_left_pending_by_a_lost_turn_is_closed_and_the_conversation_answers_again(
    tenant_a: Tenant, notices: Callable
) -> None:
    with tenant_context(tenant_a):
        # given: a turn whose task was lost; the runs' watchdog failed its run a minute ago
        user, conversation = _conversation("orphaned")
        _, lost = conversation_message_send(conversation=conversation, user=user, content="hello?")
        _run_ended(lost, RunStatus.FAILED, "the run did not finish before its deadline (worker lost?)", ago_s=60)
        # and another conversation's turn whose run ended a moment ago: its own task may still write it
        _, other_conversation = _conversation("recent")
        _, recent = conversation_message_send(conversation=other_conversation, user=user, content="hi")
        _run_ended(recent, RunStatus.CANCELLED, "cancelled before it started", ago_s=1)
        received = notices(conversation)

        # when
        closed = messages_watchdog()

        # then: the lost turn's answer is failed with the run's reason; the recent one is left to its task
        assert closed == 1
        stored = Message.objects.get(pk=lost.pk)
        assert (stored.status, stored.error) == ("failed", "the run did not finish before its deadline (worker lost?)")
        assert Message.objects.get(pk=recent.pk).status == "pending"
        # and the open page is told, with the message to show
        [done] = received()
        assert (done["type"], done["message_id"], done["status"]) == ("message_done", lost.pk, "failed")
        assert done["message"]["error"].startswith("the run did not finish")
        # and the conversation is no longer busy
        _, next_answer = conversation_message_send(conversation=conversation, user=user, content="still there?")
        assert next_answer.status == "pending"
        # and a second round has nothing left to close
        assert messages_watchdog() == 0


def test_an_answer_whose_run_was_deleted_is_failed(tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        user, conversation = _conversation("deleted")
        _, answer = conversation_message_send(conversation=conversation, user=user, content="hello?")
        AgentRun.objects.filter(pk=answer.run_id).delete()
        Message.objects.filter(pk=answer.pk).update(created_at=timezone.now() - timedelta(minutes=5))

        assert messages_watchdog() == 1

        stored = Message.objects.get(pk=answer.pk)
        assert (stored.status, stored.run_id) == ("failed", None)
        assert "deleted" in stored.error


def test_stopping_a_turn_that_has_not_started_writes_it_stopped_at_once(tenant_a: Tenant, notices: Callable) -> None:
    with tenant_context(tenant_a):
        # given: a turn still queued (no worker has taken it)
        user, conversation = _conversation("queued")
        _, answer = conversation_message_send(conversation=conversation, user=user, content="hello?")
        received = notices(conversation)

        # when
        message_stop(message=Message.objects.select_related("conversation", "run").get(pk=answer.pk))

        # then: stopped now, not when the task comes (or the watchdog, if it never does)
        stored = Message.objects.get(pk=answer.pk)
        assert (stored.status, stored.error) == ("stopped", "cancelled before it started")
        assert [(n["type"], n["status"]) for n in received()] == [("message_done", "stopped")]
        conversation_message_send(conversation=conversation, user=user, content="another question")


def test_stopping_an_answer_whose_worker_died_writes_it_stopped_at_once_with_what_it_had_streamed(
    tenant_a: Tenant, tenant_b: Tenant, notices: Callable
) -> None:
    """The worker writing the answer died (its run is "running" with no liveness key): no worker will see the stop
    flag, and the turn's task comes back only after the broker's visibility timeout (minutes). The stop writes the
    answer itself, from what the run had streamed."""
    from agents.runtime.events import EventType, make_event
    from agents.runtime.liveness import run_alive_key
    from agents.runtime.streams import RunEventPublisher

    with tenant_context(tenant_a):
        # given: a turn whose worker claimed its run two minutes ago, streamed part of the answer, and died
        user, conversation = _conversation("crashed")
        _, answer = conversation_message_send(conversation=conversation, user=user, content="hello?")
        AgentRun.objects.filter(pk=answer.run_id).update(
            status=RunStatus.RUNNING, started_at=timezone.now() - timedelta(minutes=2)
        )
        Message.objects.filter(pk=answer.pk).update(status=Message.Status.STREAMING)
        publisher = RunEventPublisher(tenant_a.schema_name, str(answer.run_id))
        streamed = [("run_started", {}), ("step_started", {"step": 1}), ("text_delta", {"text": "Half an "})]
        for seq, (kind, data) in enumerate([*streamed, ("text_delta", {"text": "answer"})], start=1):
            publisher.publish(make_event(EventType(kind), run_id=str(answer.run_id), seq=seq, data=data))
        publisher.close()
        # and the same run id alive in another tenant, which says nothing about this one
        redis_client().set(run_alive_key(tenant_b.schema_name, str(answer.run_id)), "1", ex=30)
        received = notices(conversation)

        # when
        message_stop(message=Message.objects.select_related("conversation", "run").get(pk=answer.pk))

        # then: stopped now, with the words it had streamed, and the open page is told
        stored = Message.objects.get(pk=answer.pk)
        assert (stored.status, stored.content) == ("stopped", "Half an answer")
        assert [(n["type"], n["status"]) for n in received()] == [("message_done", "stopped")]
        # and the conversation answers again
        conversation_message_send(conversation=conversation, user=user, content="are you back?")
    redis_client().delete(run_alive_key(tenant_b.schema_name, str(answer.run_id)))


def test_a_second_writer_that_loaded_the_answer_still_pending_rebuilds_its_units_instead_of_adding_to_them(
    tenant_a: Tenant,
) -> None:
    """The turn's worker and the watchdog (or a stop) both loaded the answer while it was pending; the second to
    write finds it written (its conditional update waits for the first's commit, then matches nothing)."""
    with tenant_context(tenant_a):
        user, conversation = _conversation("raced")
        _, answer = conversation_message_send(conversation=conversation, user=user, content="hello?")
        run = answer.run
        run.status, run.output, run.finished_at = RunStatus.SUCCEEDED, "Done [1].", timezone.now()
        run.save()
        citation = {"index": 1, "document_id": 3, "document_title": "Handbook", "chunk_id": 9, "text": "passage"}
        RunStep.objects.bulk_create(
            [
                RunStep(run=run, seq=2, type="step_started", data={"step": 1}),
                RunStep(run=run, seq=3, type="final_answer", data={"text": run.output, "citations": [citation]}),
            ]
        )
        first, second = Message.objects.get(pk=answer.pk), Message.objects.get(pk=answer.pk)

        message_finalize(message=first, run=AgentRun.objects.get(pk=run.pk))
        message_finalize(message=second, run=AgentRun.objects.get(pk=run.pk))

        stored = Message.objects.get(pk=answer.pk)
        assert stored.status == "completed"
        assert [unit.kind for unit in stored.units.all()] == ["step", "final_answer"]
        assert stored.citations.count() == 1


def test_the_watchdog_in_tenant_b_does_not_close_tenant_a_answers(tenant_a: Tenant, tenant_b: Tenant) -> None:
    with tenant_context(tenant_a):
        user, conversation = _conversation("isolated")
        _, theirs = conversation_message_send(conversation=conversation, user=user, content="A's question")
        _run_ended(theirs, RunStatus.FAILED, "worker lost", ago_s=600)

    with tenant_context(tenant_b):
        assert messages_watchdog() == 0
        assert not Message.objects.filter(pk=theirs.pk, content="A's question").exists()

    with tenant_context(tenant_a):
        assert Message.objects.get(pk=theirs.pk).status == "pending"


def test_the_scheduled_watchdog_visits_every_active_tenant_in_its_own_schema(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    from conversations.tasks import conversation_messages_watchdog

    stuck = {}
    for tenant in (tenant_a, tenant_b):
        with tenant_context(tenant):
            user, conversation = _conversation("lost")
            _, answer = conversation_message_send(conversation=conversation, user=user, content="?")
            _run_ended(answer, RunStatus.FAILED, f"lost in {tenant.schema_name}", ago_s=600)
            stuck[tenant.schema_name] = answer.pk

    conversation_messages_watchdog.run()  # as beat enqueues it: in the public schema

    for tenant in (tenant_a, tenant_b):
        with tenant_context(tenant):
            stored = Message.objects.get(pk=stuck[tenant.schema_name])
            assert (stored.status, stored.error) == ("failed", f"lost in {tenant.schema_name}")
