"""A run handed to its worker in its task's message (`run_handoff`): started without being read, and read with its
claim once its model request is out. Real PostgreSQL and Redis; the model is the local OpenAI-compatible test server
(real HTTP and server-sent events), standing in for the external provider. `run_execute` is called in this process,
as the worker's task calls it, so that the statements it runs can be watched."""

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from agents.models import Agent, AgentRun, RunStatus
from agents.runtime.streams import run_events_since
from agents.services.runs import (
    HANDOFF_MAX_CHARS,
    run_cancel,
    run_execute,
    run_from_handoff,
    run_handoff,
    run_prepare,
)
from conftest import Committed
from nexent_site.testing.fake_openai import FakeOpenAI, Reply
from nexent_site.testing.waiting import wait_for
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def queued_run(slug: str) -> AgentRun:
    """A chat turn's run as the web saves it (its task not sent: this test plays the worker)."""
    run = run_prepare(agent=Agent.objects.get(slug=slug), messages="hello", trigger="chat", user_email="u@a.test")
    run.save()
    return run


def test_a_handed_off_run_is_read_with_its_claim_once_its_model_request_is_out(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    published_agent(slug="handed", mode="chat")
    fake_llm.script(Reply(content="Handed over", delay_s=0.2))
    run = committed.run(tenant_a, lambda: queued_run("handed"))
    handoff = run_handoff(run)
    statements: list[tuple[str, bool]] = []  # each statement on the runs' table: was the model request out by then?

    def watch(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if "agents_agentrun" in sql:
            # a statement run before the request is sent holds this thread: the request cannot arrive meanwhile
            statements.append((sql.split()[0], wait_for(lambda: len(fake_llm.chat_requests()) == 1, 1)))
        return execute(sql, params, many, context)

    def execute() -> AgentRun | None:
        with connection.execute_wrapper(watch):
            return run_execute(run_id=handoff["id"], run=run_from_handoff(handoff), read=False)

    # when: the worker executes the run from its task's message
    done = committed.run(tenant_a, execute)

    # then: its first statement on the runs' table is the claim, sent with the model request already out
    assert statements[0] == ("UPDATE", True)
    # and the run ran to its end, its fields read with the claim (not the task's), its events complete
    stored = committed.run(tenant_a, lambda: AgentRun.objects.get(pk=run.pk))
    assert done is not None and done.status == stored.status == RunStatus.SUCCEEDED
    assert stored.output == "Handed over" and stored.started_at is not None
    assert (done.trigger, done.user_email, done.created_at) == ("chat", "u@a.test", stored.created_at)
    events = run_events_since(tenant_a.schema_name, str(run.pk))
    assert events[0]["type"] == "run_started" and events[0]["data"]["trigger"] == "chat"
    assert events[-1]["type"] == "run_finished" and events[-1]["data"]["status"] == "succeeded"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_a_handed_off_run_stopped_while_queued_drops_its_model_request_and_publishes_nothing(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    published_agent(slug="stopped", mode="chat")
    fake_llm.script(Reply(content=" ".join(f"w{i}" for i in range(50)), token_gap_s=0.05))
    dropped = fake_llm.dropped_streams

    def queued_then_stopped() -> AgentRun:
        run = queued_run("stopped")
        handoff = run_handoff(run)
        run_cancel(run=run)  # the user stopped it before a worker took it: cancelled at once
        return handoff

    handoff = committed.run(tenant_a, queued_then_stopped)
    published = len(run_events_since(tenant_a.schema_name, handoff["id"]))

    # when: its task arrives anyway
    done = committed.run(tenant_a, lambda: run_execute(run_id=handoff["id"], run=run_from_handoff(handoff), read=False))

    # then: the run is left cancelled, the model's answer is not read, and nothing more is published
    assert done is not None and done.status == RunStatus.CANCELLED
    assert committed.run(tenant_a, lambda: AgentRun.objects.get(pk=handoff["id"]).status) == RunStatus.CANCELLED
    assert wait_for(lambda: fake_llm.dropped_streams == dropped + 1)
    assert len(run_events_since(tenant_a.schema_name, handoff["id"])) == published


def test_a_handoff_naming_another_tenants_run_executes_nothing(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    """A task's message naming tenant B's run, delivered in tenant A's schema: the claim finds no such run there."""
    published_agent(slug="theirs", mode="chat", tenant=tenant_b)
    fake_llm.script(Reply(content="Not for A", token_gap_s=0.05))
    run_b = committed.run(tenant_b, lambda: queued_run("theirs"))
    handoff = run_handoff(run_b)

    done = committed.run(tenant_a, lambda: run_execute(run_id=handoff["id"], run=run_from_handoff(handoff), read=False))

    assert done is None
    assert committed.run(tenant_b, lambda: AgentRun.objects.get(pk=run_b.pk).status) == RunStatus.QUEUED
    assert run_events_since(tenant_a.schema_name, handoff["id"]) == []
    assert run_events_since(tenant_b.schema_name, handoff["id"]) == []
    committed.run(tenant_b, lambda: AgentRun.objects.filter(pk=run_b.pk).delete())


def test_a_run_with_long_messages_is_read_by_its_worker_not_sent_in_its_task() -> None:
    short = AgentRun(spec={"mode": "chat"}, input=[{"role": "user", "content": "hello"}])
    long = AgentRun(spec={"mode": "chat"}, input=[{"role": "user", "content": "x" * (HANDOFF_MAX_CHARS + 1)}])

    assert run_handoff(short) == {"id": str(short.pk), "spec": {"mode": "chat"}, "input": short.input}
    assert run_handoff(long) is None


@pytest.mark.parametrize(
    "forged",
    [
        lambda run: {"id": str(uuid.uuid4()), "spec": run.spec, "input": [{"role": "user", "content": "forged words"}]},
        lambda run: {"id": "not a run id", "spec": run.spec, "input": [{"role": "user", "content": "forged words"}]},
        lambda run: {"id": str(run.pk), "spec": "not a spec", "input": None},
    ],
    ids=["another run", "a malformed id", "malformed fields"],
)
def test_a_task_whose_handoff_is_not_its_runs_reads_its_own_run(
    forged: Callable[[AgentRun], dict],
    committed: Committed,
    fake_llm: FakeOpenAI,
    published_agent: Any,
    tenant_a: Tenant,
) -> None:
    """The run in a task's message must be the task's run, and well formed: else it is ignored, and the run is read."""
    from agents.tasks import agent_run_execute

    published_agent(slug="mine", mode="chat")
    fake_llm.script(Reply(content="From the stored run"))
    run = committed.run(tenant_a, lambda: queued_run("mine"))

    status = committed.run(tenant_a, lambda: agent_run_execute(str(run.pk), run=forged(run)))

    assert status == RunStatus.SUCCEEDED
    assert fake_llm.chat_requests()[-1]["messages"][-1]["content"] == "hello"
