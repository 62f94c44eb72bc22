"""Agent runs end to end: a real Celery worker process, real Redis (stream + channel layer), real
PostgreSQL, and the local OpenAI-compatible test server standing in for the external model provider."""

import io
import json
import time
import uuid
from itertools import pairwise
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import transaction
from django.test import override_settings
from django_tenants.utils import tenant_context

from agents.models import AgentRun, RunStatus, RunStep
from agents.runtime.events import EventType
from agents.runtime.streams import run_events_follow, run_events_since
from agents.services.runs import run_cancel, run_start
from conftest import Committed
from nexent_site.testing.fake_openai import FakeOpenAI, Reply, ToolCallSpec
from tenants.models import Tenant

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_worker")]


def start(committed: Committed, tenant: Tenant, slug: str, message: str = "hello", **kwargs: Any) -> AgentRun:
    from agents.models import Agent

    return committed.run(
        tenant, lambda: run_start(agent=Agent.objects.get(slug=slug), messages=message, trigger="api", **kwargs)
    )


def follow(tenant: Tenant, run: AgentRun, timeout: float = 60) -> list[dict]:
    return list(run_events_follow(tenant.schema_name, str(run.id), timeout_s=timeout))


def stored(committed: Committed, tenant: Tenant, run: AgentRun) -> AgentRun:
    return committed.run(tenant, lambda: AgentRun.objects.get(pk=run.pk))


def running_run(slug: str, **fields: Any) -> AgentRun:
    """A run of the published agent `slug` that a worker took ("running"), as a worker that died leaves it."""
    from agents.models import Agent

    agent = Agent.objects.get(slug=slug)
    return AgentRun.objects.create(
        agent=agent,
        version=agent.published_version,
        spec=agent.published_version.spec,
        trigger="api",
        status=RunStatus.RUNNING,
        input=[],
        **fields,
    )


def test_tools_run_end_to_end_with_events_in_order(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    # given: the model first calls the calculator, then answers
    published_agent(slug="mathy", tools=("calculator", "datetime"), role_prompt="You do sums.")
    fake_llm.script(
        Reply(content="Let me compute.", tool_calls=[ToolCallSpec("calculator", {"expression": "6*7"})]),
        Reply(tool_calls=[ToolCallSpec("final_answer", {"answer": "It is 42."})]),
    )

    # when
    run = start(committed, tenant_a, "mathy", "what is 6 times 7?")
    events = follow(tenant_a, run)

    # then: contiguous sequence numbers, the protocol's order, the tool really ran
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    types = [e["type"] for e in events]
    assert types[0] == "run_started" and types[-1] == "run_finished"
    assert types.index("step_started") < types.index("text_delta") < types.index("tool_call")
    assert types.index("tool_call") < types.index("tool_result") < types.index("final_answer") < types.index("usage")
    call = next(e for e in events if e["type"] == "tool_call")["data"]
    assert (call["name"], call["arguments"]) == ("calculator", {"expression": "6*7"})
    assert next(e for e in events if e["type"] == "tool_result")["data"]["output"] == "42"
    assert events[-1]["data"]["status"] == "succeeded"
    assert all(e["run_id"] == str(run.id) for e in events)

    # and the run is recorded with its steps
    done = stored(committed, tenant_a, run)
    assert (done.status, done.output, done.error) == ("succeeded", "It is 42.", "")
    assert done.tokens_in > 0 and done.tokens_out > 0 and done.ttft_ms is not None and done.duration_ms > 0
    steps = committed.run(tenant_a, lambda: list(RunStep.objects.filter(run_id=run.pk).values_list("type", flat=True)))
    assert "tool_call" in steps and "tool_result" in steps and "text_delta" not in steps
    # the system prompt reached the model, with the tools offered
    first_request = fake_llm.chat_requests()[0]
    assert "You do sums." in json.dumps(first_request["messages"])
    assert {t["function"]["name"] for t in first_request["tools"]} >= {"calculator", "current_datetime", "final_answer"}

    # a late joiner gets the same events from the stream
    assert run_events_since(tenant_a.schema_name, str(run.id), after_seq=3) == events[3:]


def test_chat_mode_streams_the_answer(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    published_agent(slug="talker", mode="chat", role_prompt="Be brief.")
    fake_llm.script(Reply(content="Hello there, how can I help?"))

    events = follow(tenant_a, start(committed, tenant_a, "talker"))

    deltas = "".join(e["data"]["text"] for e in events if e["type"] == "text_delta")
    assert deltas == "Hello there, how can I help?"
    assert next(e for e in events if e["type"] == "final_answer")["data"]["text"] == deltas
    assert events[-1]["data"]["status"] == "succeeded"
    request = fake_llm.chat_requests()[0]
    assert request["stream"] is True and request["messages"][0] == {"role": "system", "content": "Be brief."}


def test_cancel_stops_the_run_and_keeps_the_partial_answer(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    # given: a slow stream of 40 words
    published_agent(slug="slow", mode="chat")
    fake_llm.script(Reply(content=" ".join(f"word{i}" for i in range(40)), token_gap_s=0.15))
    run = start(committed, tenant_a, "slow")

    # when: stopped after the first words arrive
    events: list[dict] = []
    for event in run_events_follow(tenant_a.schema_name, str(run.id), timeout_s=60):
        events.append(event)
        if sum(e["type"] == "text_delta" for e in events) == 3:
            committed.run(tenant_a, lambda: run_cancel(run=AgentRun.objects.get(pk=run.pk)))

    # then
    done = stored(committed, tenant_a, run)
    assert done.status == RunStatus.CANCELLED and done.error == "stopped on request"
    assert done.output.startswith("word0 word1 word2") and "word39" not in done.output
    assert events[-1]["type"] == "run_finished" and events[-1]["data"]["status"] == "cancelled"
    # usage comes in a stream's last chunk, which a stopped answer never gets: what was written is estimated (it
    # used to count nothing, on any provider)
    assert done.usage_estimated is True and done.tokens_in > 0 and 3 <= done.tokens_out < 40


def test_a_run_that_outlives_its_timeout_is_marked_timed_out(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    published_agent(slug="sluggish", mode="chat", run_timeout_s=5)
    fake_llm.script(Reply(content=" ".join(["slow"] * 60), token_gap_s=0.2))

    events = follow(tenant_a, start(committed, tenant_a, "sluggish"))

    assert events[-1]["data"]["status"] == "timed_out"
    assert "5 s limit" in events[-1]["data"]["error"]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(status=401, error_message="Incorrect API key provided."), "authentication failed (401)"),
        (Reply(status=500, error_message="upstream exploded"), "HTTP 500"),
        (Reply(malformed=True), "malformed"),
    ],
)
def test_provider_failures_fail_the_run_with_a_readable_reason(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant, reply: Reply, reason: str
) -> None:
    published_agent(slug="fragile", mode="chat")
    fake_llm.script(reply)

    run = start(committed, tenant_a, "fragile")
    events = follow(tenant_a, run)

    done = stored(committed, tenant_a, run)
    assert done.status == RunStatus.FAILED
    assert reason in done.error
    assert any(e["type"] == "error" and e["data"]["fatal"] for e in events)


def test_provider_timeout_fails_the_run_instead_of_hanging(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    published_agent(slug="stuck", mode="tools", provider={"timeout_s": 1})
    fake_llm.script(Reply(content="late", delay_s=3))

    events = follow(tenant_a, start(committed, tenant_a, "stuck"))

    assert events[-1]["data"]["status"] == "failed"
    assert "timed out after 1s" in events[-1]["data"]["error"]


def test_sub_agent_steps_are_recorded_and_streamed(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    # given: "boss" manages "worker-bee"
    from agents.models import Agent
    from agents.services.agents import agent_publish, subagent_link_add

    published_agent(slug="worker-bee", description="Does the actual work.")
    boss = published_agent(slug="boss")
    committed.run(
        tenant_a,
        lambda: (subagent_link_add(parent=boss, child=Agent.objects.get(slug="worker-bee")), agent_publish(agent=boss)),
    )
    fake_llm.script(
        Reply(tool_calls=[ToolCallSpec("worker_bee", {"task": "count the bees"})]),  # boss delegates
        Reply(tool_calls=[ToolCallSpec("final_answer", {"answer": "12 bees"})]),  # the sub-agent answers
        Reply(tool_calls=[ToolCallSpec("final_answer", {"answer": "There are 12 bees."})]),  # boss answers
    )

    events = follow(tenant_a, start(committed, tenant_a, "boss", "how many bees?"))

    sub = [e for e in events if e["type"] == "subagent_event"]
    assert sub and all(e["agent"] == "boss/worker-bee" for e in sub)
    assert sub[-1]["data"]["final_answer"] == "12 bees"
    assert next(e for e in events if e["type"] == "final_answer")["data"]["text"] == "There are 12 bees."
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_runs_of_tenant_a_are_invisible_from_tenant_b(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    published_agent(slug="private", mode="chat")
    run = start(committed, tenant_a, "private")
    follow(tenant_a, run)

    with tenant_context(tenant_b):
        assert not AgentRun.objects.filter(pk=run.pk).exists()
    assert run_events_since(tenant_b.schema_name, str(run.id)) == []
    with tenant_context(tenant_a):
        assert AgentRun.objects.filter(pk=run.pk).exists()


def test_agent_run_command_prints_json_lines_and_fails_loudly(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    published_agent(slug="cli-agent", mode="chat")
    fake_llm.script(Reply(content="All good."), Reply(status=401))

    def agent_run(*args: str) -> str:
        # outside the test's transaction, as from a shell, so the worker sees the run
        out = io.StringIO()
        committed.run(tenant_a, lambda: call_command("agent_run", "--tenant", "alpha", *args, stdout=out))
        return out.getvalue()

    lines = [json.loads(line) for line in agent_run("--agent", "cli-agent", "hi").splitlines()]
    assert lines[0]["type"] == "run_started" and lines[-1]["data"]["status"] == "succeeded"
    assert [e["seq"] for e in lines] == list(range(1, len(lines) + 1))

    with pytest.raises(CommandError, match=r"failed: .*authentication failed"):
        agent_run("--agent", "cli-agent", "hi")
    with pytest.raises(CommandError, match="No agent 'nope'"):
        agent_run("--agent", "nope", "hi")


def test_cancelling_a_queued_run_ends_it_at_once(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    published_agent(slug="never", mode="chat")
    # a run created but not yet picked up: cancel it inside the same commit as its creation
    from agents.models import Agent

    def create_and_cancel() -> AgentRun:
        with transaction.atomic():  # the task is only sent when this commits, after the cancel
            run = run_start(agent=Agent.objects.get(slug="never"), messages="hi", trigger="api")
            return run_cancel(run=run)

    run = committed.run(tenant_a, create_and_cancel)
    events = follow(tenant_a, run, timeout=30)
    assert run.status == RunStatus.CANCELLED
    assert events[-1]["data"]["status"] == "cancelled"
    time.sleep(0.5)  # the worker, receiving the task anyway, must leave the run alone
    assert stored(committed, tenant_a, run).status == RunStatus.CANCELLED


def test_an_agent_without_a_provider_uses_the_tenant_default(
    committed: Committed, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    from agents.models import Agent, ModelProvider
    from agents.services.agents import agent_publish
    from agents.services.providers import provider_save
    from agents.tests.fixtures import make_provider

    def create() -> AgentRun:
        make_provider(fake_llm, name="Fake default", is_default=True)
        agent = Agent.objects.create(name="Plain", slug="plain", mode="tools")  # no chat_provider of its own
        agent_publish(agent=agent)
        return run_start(agent=agent, messages="hello there", trigger="api")

    def restore() -> None:
        Agent.objects.filter(slug="plain").delete()
        ModelProvider.objects.filter(name="Fake default").delete()
        local = ModelProvider.objects.get(kind="chat", is_builtin=True)
        local.is_default = True
        provider_save(provider=local)

    committed.on_teardown(tenant_a, restore)
    run = committed.run(tenant_a, create)
    events = follow(tenant_a, run)

    assert events[-1]["data"]["status"] == "succeeded", events[-1]
    assert next(e for e in events if e["type"] == "final_answer")["data"]["text"].endswith("hello there")


def test_tools_mode_without_streaming_for_servers_that_cannot_stream_tool_calls(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    published_agent(
        slug="nostream", tools=("calculator",), provider={"stream_tool_calls": False, "tool_choice": "auto"}
    )
    fake_llm.script(
        Reply(tool_calls=[ToolCallSpec("calculator", {"expression": "1+1"})]),
        Reply(tool_calls=[ToolCallSpec("final_answer", {"answer": "2"})]),
    )

    events = follow(tenant_a, start(committed, tenant_a, "nostream"))

    assert events[-1]["data"]["status"] == "succeeded"
    assert next(e for e in events if e["type"] == "tool_result")["data"]["output"] == "2"
    assert [r.get("stream", False) for r in fake_llm.chat_requests()] == [False, False]
    assert stored(committed, tenant_a, AgentRun(pk=events[0]["run_id"])).tokens_in > 0
    assert {r["tool_choice"] for r in fake_llm.chat_requests()} == {"auto"}


def test_a_provider_runs_at_most_max_concurrency_runs_at_once(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    # given: a provider limited to one run at a time, and two slow runs started together
    published_agent(slug="single-file", mode="chat", provider={"max_concurrency": 1})
    fake_llm.script(*[Reply(content=" ".join(["tok"] * 10), token_gap_s=0.1) for _ in range(2)])
    first = start(committed, tenant_a, "single-file")
    second = start(committed, tenant_a, "single-file")

    # when
    a, b = follow(tenant_a, first), follow(tenant_a, second)

    # then: both succeed, and their streams did not overlap
    assert a[-1]["data"]["status"] == b[-1]["data"]["status"] == "succeeded"
    a_deltas = [e["ts"] for e in a if e["type"] == "text_delta"]
    b_deltas = [e["ts"] for e in b if e["type"] == "text_delta"]
    assert a_deltas[-1] <= b_deltas[0] or b_deltas[-1] <= a_deltas[0]


def test_runs_waiting_for_a_saturated_provider_leave_the_workers_to_other_tenants(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    """The session's worker has two processes. Tenant A's provider takes one run at a time and A starts three
    slow runs; B's run, started after them, streams while A's first is still streaming. When A's waiting runs
    held a worker process each, B's waited until A's first had finished."""
    # given
    published_agent(slug="saturated", mode="chat", provider={"max_concurrency": 1})
    published_agent(tenant=tenant_b, slug="neighbour", mode="chat")
    fake_llm.script(*[Reply(content=" ".join(["tok"] * 15), token_gap_s=0.1) for _ in range(4)])

    # when
    a_runs = [start(committed, tenant_a, "saturated") for _ in range(3)]
    time.sleep(0.3)  # A's first is streaming, the others are waiting for its provider
    b_run = start(committed, tenant_b, "neighbour")
    b_events = follow(tenant_b, b_run)
    a_events = [follow(tenant_a, run) for run in a_runs]

    # then: every run succeeded; A's provider never served two at once
    assert [events[-1]["data"]["status"] for events in [*a_events, b_events]] == ["succeeded"] * 4
    a_spans = sorted(
        (deltas[0], deltas[-1])
        for deltas in ([e["ts"] for e in events if e["type"] == "text_delta"] for events in a_events)
    )
    assert all(earlier[1] <= later[0] for earlier, later in pairwise(a_spans))
    # and B's answer began while A's first was still being written
    b_first_token = next(e["ts"] for e in b_events if e["type"] == "text_delta")
    assert b_first_token < a_spans[0][1]
    # and a waiting run published nothing until it had its provider: its start follows the previous run's end
    starts = sorted(next(e["ts"] for e in events if e["type"] == "run_started") for events in a_events)
    assert starts[1] >= a_spans[0][1] and starts[2] >= a_spans[1][1]


def test_a_tenant_runs_at_most_its_max_concurrent_runs_at_once_and_another_tenant_is_not_held_up(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    """Tenant A may run one agent run at a time (platform admin's limit); its provider has room for more."""
    # given
    published_agent(slug="limited", mode="chat")
    published_agent(tenant=tenant_b, slug="unlimited", mode="chat")

    def limit(runs: int) -> None:  # saved as the platform admin saves it: every process's tenant cache sees it
        tenant = Tenant.objects.get(pk=tenant_a.pk)
        tenant.max_concurrent_runs = runs
        tenant.save(update_fields=["max_concurrent_runs"])

    committed.run(tenant_a, lambda: limit(1))
    fake_llm.script(*[Reply(content=" ".join(["tok"] * 12), token_gap_s=0.1) for _ in range(3)])
    try:
        # when
        a_runs = [start(committed, tenant_a, "limited") for _ in range(2)]
        time.sleep(0.3)
        b_run = start(committed, tenant_b, "unlimited")
        b_events = follow(tenant_b, b_run)
        a_events = [follow(tenant_a, run) for run in a_runs]
    finally:
        committed.run(tenant_a, lambda: limit(0))

    # then
    assert [events[-1]["data"]["status"] for events in [*a_events, b_events]] == ["succeeded"] * 3
    a_spans = sorted(
        (deltas[0], deltas[-1])
        for deltas in ([e["ts"] for e in events if e["type"] == "text_delta"] for events in a_events)
    )
    assert a_spans[0][1] <= a_spans[1][0]
    assert next(e["ts"] for e in b_events if e["type"] == "text_delta") < a_spans[0][1]


def test_the_watchdog_closes_runs_whose_worker_died(
    committed: Committed, published_agent: Any, tenant_a: Tenant
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from agents.services.runs import runs_watchdog

    published_agent(slug="orphan", mode="chat")

    run = committed.run(tenant_a, lambda: running_run("orphan", deadline_at=timezone.now() - timedelta(hours=1)))
    assert committed.run(tenant_a, runs_watchdog) == 1

    done = stored(committed, tenant_a, run)
    assert done.status == RunStatus.FAILED and "deadline" in done.error
    assert run_events_since(tenant_a.schema_name, str(run.id))[-1]["data"]["status"] == "failed"


def test_the_watchdog_takes_a_run_that_waited_too_long_out_of_the_line(
    committed: Committed, published_agent: Any, tenant_a: Tenant
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from agents.runtime.limits import provider_slots_key
    from agents.runtime.waiters import run_waiting_add, run_waiting_next
    from agents.services.runs import runs_watchdog

    published_agent(slug="patient", mode="chat")
    run = committed.run(tenant_a, lambda: running_run("patient", deadline_at=timezone.now() - timedelta(hours=1)))
    committed.run(tenant_a, lambda: AgentRun.objects.filter(pk=run.pk).update(status=RunStatus.QUEUED))
    key = provider_slots_key(tenant_a.schema_name, "1")
    run_waiting_add(tenant_a.schema_name, key, str(run.id), task="agents.tasks.agent_run_execute", args=[str(run.id)])

    assert committed.run(tenant_a, runs_watchdog) == 1

    assert "not started in time" in stored(committed, tenant_a, run).error
    assert run_waiting_next(tenant_a.schema_name, key) is None


def test_fast_tokens_are_gathered_into_fewer_text_deltas_and_slow_ones_are_not_held(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    """RUN_TEXT_DELTA_INTERVAL_MS (60 ms): the first token goes out alone and at once; tokens that arrive faster
    than the interval share events; tokens slower than it each get their own, so a slow model's text is never
    held back."""
    # given
    published_agent(slug="gatherer", mode="chat")
    fast = " ".join(f"f{i}" for i in range(30))
    slow = "s0 s1 s2 s3"
    fake_llm.script(Reply(content=fast, token_gap_s=0.0), Reply(content=slow, token_gap_s=0.15))

    # when
    fast_deltas = [
        e["data"]["text"] for e in follow(tenant_a, start(committed, tenant_a, "gatherer")) if e["type"] == "text_delta"
    ]
    slow_deltas = [
        e["data"]["text"] for e in follow(tenant_a, start(committed, tenant_a, "gatherer")) if e["type"] == "text_delta"
    ]

    # then: every token exactly once, in order
    assert "".join(fast_deltas) == fast and "".join(slow_deltas) == slow
    assert fast_deltas[0] == "f0 " and len(fast_deltas) < 10
    assert slow_deltas == ["s0 ", "s1 ", "s2 ", "s3"]


def test_each_publish_also_tells_whether_the_run_was_cancelled(tenant_a: Tenant, tenant_b: Tenant) -> None:
    """The cancel flag is read in the event's own round trip; another tenant's flag for the same run id is not
    this run's."""
    from agents.runtime.events import make_event
    from agents.runtime.streams import RunEventPublisher, redis_client, run_cancel_key

    run_id = str(uuid.uuid4())
    publisher = RunEventPublisher(tenant_a.schema_name, run_id, watch_key=run_cancel_key(tenant_a.schema_name, run_id))
    client = redis_client()
    try:
        publisher.publish(make_event(EventType.STEP_STARTED, run_id=run_id, seq=1, data={"step": 1}))
        assert publisher.watched_key_exists is False
        client.set(run_cancel_key(tenant_b.schema_name, run_id), "1", ex=60)
        publisher.publish(make_event(EventType.STEP_STARTED, run_id=run_id, seq=2, data={"step": 2}))
        assert publisher.watched_key_exists is False
        client.set(run_cancel_key(tenant_a.schema_name, run_id), "1", ex=60)
        publisher.publish(make_event(EventType.STEP_STARTED, run_id=run_id, seq=3, data={"step": 3}))
        assert publisher.watched_key_exists is True
        assert [e["seq"] for e in run_events_since(tenant_a.schema_name, run_id)] == [1, 2, 3]
    finally:
        client.delete(run_cancel_key(tenant_a.schema_name, run_id), run_cancel_key(tenant_b.schema_name, run_id))
        publisher.close()


def test_an_event_the_stream_refuses_is_not_sent_to_the_runs_group(tenant_a: Tenant) -> None:
    """Stream and group get the same events: one whose number the stream already holds (a second worker on the
    same run) is refused by both, so no page sees an event a reconnect could not replay. The publisher holds one
    pooled connection for the run and gives it back when closed."""
    import redis as redis_lib

    from agents.runtime.events import make_event
    from agents.runtime.streams import RunEventPublisher, group_message, redis_client

    run_id = str(uuid.uuid4())
    publisher = RunEventPublisher(tenant_a.schema_name, run_id)
    channel, _ = group_message(publisher.group, {})
    listener = redis_client().pubsub()
    listener.subscribe(channel)
    assert listener.get_message(timeout=5)["type"] == "subscribe"
    pool = redis_client().connection_pool
    try:
        publisher.publish(make_event(EventType.STEP_STARTED, run_id=run_id, seq=1, data={"step": 1}))
        with pytest.raises(redis_lib.ResponseError):
            publisher.publish(make_event(EventType.STEP_STARTED, run_id=run_id, seq=1, data={"step": "again"}))
        publisher.publish(make_event(EventType.STEP_STARTED, run_id=run_id, seq=2, data={"step": 2}))
        received = []
        while (message := listener.get_message(timeout=1)) is not None:
            received.append(message)
        assert len(received) == 2
        assert [e["data"]["step"] for e in run_events_since(tenant_a.schema_name, run_id)] == [1, 2]
    finally:
        listener.close()
    held = publisher.redis.connection
    assert held in pool._in_use_connections
    publisher.close()
    assert held not in pool._in_use_connections


def test_a_runs_last_events_go_out_in_one_round_trip_that_also_removes_its_liveness_key(
    tenant_a: Tenant, tenant_b: Tenant
) -> None:
    """`publish_closing`: the run's usage and `run_finished`, in order, to its stream and its group, and its
    liveness key removed, in one command; the same run id's key in another tenant is not touched. An event the
    stream refuses stops the rest, as `publish` would."""
    import redis as redis_lib

    from agents.runtime.events import make_event
    from agents.runtime.liveness import run_alive_key
    from agents.runtime.streams import RunEventPublisher, group_message, redis_client

    run_id = str(uuid.uuid4())
    client = redis_client()
    mine, theirs = run_alive_key(tenant_a.schema_name, run_id), run_alive_key(tenant_b.schema_name, run_id)
    client.set(mine, "1", ex=60)
    client.set(theirs, "1", ex=60)
    publisher = RunEventPublisher(tenant_a.schema_name, run_id)
    channel, _ = group_message(publisher.group, {})
    listener = client.pubsub()
    listener.subscribe(channel)
    assert listener.get_message(timeout=5)["type"] == "subscribe"
    try:
        publisher.publish(make_event(EventType.STEP_STARTED, run_id=run_id, seq=1, data={"step": 1}))
        closing = [
            make_event(EventType.USAGE, run_id=run_id, seq=2, data={"tokens_in": 1, "tokens_out": 2}),
            make_event(EventType.RUN_FINISHED, run_id=run_id, seq=3, data={"status": "succeeded"}),
        ]

        publisher.publish_closing(closing, delete_key=mine)

        received = []
        while (message := listener.get_message(timeout=1)) is not None:
            received.append(message)
        assert len(received) == 3
        stored = run_events_since(tenant_a.schema_name, run_id)
        assert [(e["seq"], e["type"]) for e in stored] == [(1, "step_started"), (2, "usage"), (3, "run_finished")]
        assert not client.exists(mine) and client.exists(theirs)
        assert client.ttl(publisher.stream_key) > 0

        # a second worker's close of the same run: refused by the stream, sent to nobody
        with pytest.raises(redis_lib.ResponseError):
            publisher.publish_closing(closing, delete_key=mine)
        assert listener.get_message(timeout=1) is None
        assert len(run_events_since(tenant_a.schema_name, run_id)) == 3
    finally:
        listener.close()
        publisher.close()
        client.delete(theirs, publisher.stream_key)


def test_stored_steps_are_written_mid_run_once_one_is_worth_reading(
    committed: Committed, published_agent: Any, tenant_a: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mid-run, the stored steps are written at most STEP_FLUSH_S behind the stream; the run's start and a step's
    start alone wait for the next flush (they tell nothing the run's row does not), so a chat answer's steps are
    all written with its end, and a tool call brings the ones before it."""
    from agents.models import Agent
    from agents.services import runs

    published_agent(slug="recorded", mode="chat")
    monkeypatch.setattr(runs, "STEP_FLUSH_S", 0.0)  # every emit is past the flush interval

    def record() -> tuple[list[str], list[str]]:
        run = run_start(agent=Agent.objects.get(slug="recorded"), messages="hi", trigger="api", enqueue=False)
        recorder = runs._RunRecorder(run)
        try:
            recorder.emit(EventType.RUN_STARTED, {"agent": "recorded"})
            recorder.emit(EventType.STEP_STARTED, {"step": 1})
            recorder.emit(EventType.TEXT_DELTA, {"text": "thinking"})
            before_tool = list(RunStep.objects.filter(run=run).values_list("type", flat=True))
            recorder.emit(EventType.TOOL_CALL, {"id": "c1", "name": "calculator", "arguments": {}})
            after_tool = list(RunStep.objects.filter(run=run).order_by("seq").values_list("type", flat=True))
        finally:
            recorder.close()
            AgentRun.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLED, last_seq=recorder.seq)
        return before_tool, after_tool

    before_tool, after_tool = committed.run(tenant_a, record)

    assert before_tool == []
    assert after_tool == ["run_started", "step_started", "tool_call"]


def test_a_final_answer_alone_waits_for_the_runs_end_to_be_written(
    committed: Committed, published_agent: Any, tenant_a: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The final answer is the agent's last step and the run's end follows it at once: it does not make an
    INSERT of its own mid-run (it used to, a few milliseconds before the end's), but is written with the end."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from agents.models import Agent
    from agents.services import runs

    published_agent(slug="finisher", mode="chat")
    monkeypatch.setattr(runs, "STEP_FLUSH_S", 0.0)  # every emit is past the flush interval

    def record() -> tuple[list[str], int, list[str]]:
        run = run_start(agent=Agent.objects.get(slug="finisher"), messages="hi", trigger="api", enqueue=False)
        recorder = runs._RunRecorder(run)
        try:
            with CaptureQueriesContext(connection) as queries:
                recorder.emit(EventType.RUN_STARTED, {"agent": "finisher"})
                recorder.emit(EventType.STEP_STARTED, {"step": 1})
                recorder.emit(EventType.TEXT_DELTA, {"text": "All done."})
                recorder.emit(EventType.FINAL_ANSWER, {"text": "All done.", "citations": []})
                before_end = list(RunStep.objects.filter(run=run).values_list("type", flat=True))
                recorder.emit(EventType.USAGE, {"tokens_in": 1, "tokens_out": 2})
                recorder.flush()  # the run's end
            inserts = sum('INSERT INTO "agents_runstep"' in q["sql"] for q in queries.captured_queries)
            stored = list(RunStep.objects.filter(run=run).order_by("seq").values_list("type", flat=True))
        finally:
            recorder.close()
            AgentRun.objects.filter(pk=run.pk).update(status=RunStatus.CANCELLED, last_seq=recorder.seq)
        return before_end, inserts, stored

    before_end, inserts, stored_steps = committed.run(tenant_a, record)

    assert before_end == []
    assert stored_steps == ["run_started", "step_started", "final_answer", "usage"]
    assert inserts == 1


def test_a_runs_end_writes_its_last_steps_its_row_and_its_usage_in_one_statement(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    """The run executed in this process against the local OpenAI-compatible test server (standing in for the
    provider): its close writes the steps still buffered, its final row and its usage record in one statement,
    and each is stored as the run's events said, in the run's tenant only."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from agents.models import Agent, UsageRecord
    from agents.services.runs import run_execute

    published_agent(slug="closer", mode="chat")
    fake_llm.script(Reply(content="Closing words."))

    def execute() -> tuple[AgentRun, list[str], list[tuple[int, int, str]]]:
        run = run_start(agent=Agent.objects.get(slug="closer"), messages="hi", trigger="api", enqueue=False)
        with CaptureQueriesContext(connection) as queries:
            done = run_execute(run_id=str(run.id))
        written = [(step.pk, step.seq, step.type) for step in done.steps.all()]  # as the close left them at hand
        return done, [q["sql"] for q in queries.captured_queries], written

    run, statements, written = committed.run(tenant_a, execute)

    end = [sql for sql in statements if 'INSERT INTO "agents_usagerecord"' in sql]
    assert len(end) == 1 and 'INSERT INTO "agents_runstep"' in end[0] and 'UPDATE "agents_agentrun"' in end[0]
    assert not any("SAVEPOINT" in sql for sql in statements)
    events = run_events_since(tenant_a.schema_name, str(run.id))
    assert events[-1]["type"] == "run_finished"

    def read() -> tuple[Any, ...]:
        return (
            AgentRun.objects.get(pk=run.pk),
            list(RunStep.objects.filter(run_id=run.pk).order_by("seq").values_list("pk", "seq", "type")),
            list(UsageRecord.objects.filter(run_id=run.pk).values_list("agent_slug", "tokens_in", "tokens_out")),
        )

    stored_run, steps, usage = committed.run(tenant_a, read)
    assert (stored_run.status, stored_run.output, stored_run.last_seq) == (
        "succeeded",
        "Closing words.",
        events[-1]["seq"],
    )
    assert stored_run.finished_at is not None and stored_run.duration_ms is not None
    assert steps == written  # the ids the statement gave back are the rows'
    assert [(seq, kind) for _, seq, kind in steps] == [
        (e["seq"], e["type"]) for e in events if e["type"] != "text_delta"
    ]
    assert usage == [("closer", stored_run.tokens_in, stored_run.tokens_out)] and stored_run.tokens_out > 0
    # in the run's tenant only
    assert committed.run(tenant_b, lambda: UsageRecord.objects.filter(run_id=run.pk).exists()) is False


def test_a_run_delivered_again_is_left_to_its_live_worker_and_closed_when_that_worker_is_gone(
    committed: Committed, published_agent: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    """The broker delivers a task again after its visibility timeout: whether its worker died, or is still on a
    long run. The run's liveness key tells which."""
    from datetime import timedelta

    from django.utils import timezone

    from agents.runtime.liveness import run_alive_key
    from agents.services.runs import run_execute
    from nexent_site.redis_pool import redis_client

    published_agent(slug="long", mode="chat")

    run = committed.run(tenant_a, lambda: running_run("long", deadline_at=timezone.now() + timedelta(minutes=5)))
    # the same run id alive in tenant B says nothing about tenant A's run
    redis_client().set(run_alive_key(tenant_b.schema_name, str(run.id)), "1", ex=30)
    redis_client().set(run_alive_key(tenant_a.schema_name, str(run.id)), "1", ex=30)
    committed.run(tenant_a, lambda: run_execute(run_id=str(run.id)))
    assert stored(committed, tenant_a, run).status == RunStatus.RUNNING
    assert run_events_since(tenant_a.schema_name, str(run.id)) == []

    redis_client().delete(run_alive_key(tenant_a.schema_name, str(run.id)))  # its worker stopped refreshing it
    committed.run(tenant_a, lambda: run_execute(run_id=str(run.id)))
    done = stored(committed, tenant_a, run)
    assert done.status == RunStatus.FAILED and "stopped unexpectedly" in done.error
    events = run_events_since(tenant_a.schema_name, str(run.id))
    # the closing event follows what the dead worker had published (its row never said how far it got)
    assert events[-1]["type"] == "run_finished" and events[-1]["data"]["status"] == "failed"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    redis_client().delete(run_alive_key(tenant_b.schema_name, str(run.id)))


def test_a_run_is_marked_alive_while_its_worker_executes_it(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    from agents.runtime.liveness import run_alive_key
    from nexent_site.redis_pool import redis_client

    published_agent(mode="chat")
    fake_llm.script(Reply(content="a slow answer in many words " * 4, token_gap_s=0.1))
    run = start(committed, tenant_a, "helper")
    key = run_alive_key(tenant_a.schema_name, str(run.id))
    deadline = time.monotonic() + 10
    while not redis_client().exists(key) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert redis_client().exists(key), "no liveness key while the run streams"
    assert 0 < redis_client().ttl(key) <= 30

    events = follow(tenant_a, run)
    assert events[-1]["data"]["status"] == "succeeded"
    assert not redis_client().exists(key)


def test_a_run_whose_worker_was_killed_is_closed_at_its_next_delivery(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant, own_queue: str
) -> None:
    """SIGKILL the worker in the middle of a run: its unacknowledged task comes back after the broker's visibility
    timeout (3 s here, CELERY_VISIBILITY_TIMEOUT_S), the run's liveness key has expired with its worker (2 s here),
    and the next worker closes the run as failed, minutes before the watchdog's deadline would."""
    import os
    import signal

    from conftest import worker_process

    published_agent(mode="chat")
    fake_llm.script(Reply(content="a long slow answer " * 50, token_gap_s=0.1))
    worker_env = {"CELERY_VISIBILITY_TIMEOUT_S": "3", "RUN_ALIVE_TTL_S": "2"}
    with worker_process(own_queue, background=False, **worker_env) as first:
        run = start(committed, tenant_a, "helper")
        deadline = time.monotonic() + 30
        while not any(e["type"] == "text_delta" for e in run_events_since(tenant_a.schema_name, str(run.id))):
            assert time.monotonic() < deadline, "the first worker never started the run"
            time.sleep(0.05)
        os.killpg(first["process"].pid, signal.SIGKILL)
        first["process"].wait()
    assert stored(committed, tenant_a, run).status == RunStatus.RUNNING
    with worker_process(own_queue, background=False, **worker_env) as second:
        deadline = time.monotonic() + 40
        while (done := stored(committed, tenant_a, run)).status == RunStatus.RUNNING:
            assert time.monotonic() < deadline, second["log"].read_text()[-3000:]
            time.sleep(0.2)
    assert done.status == RunStatus.FAILED and "stopped unexpectedly" in done.error
    events = run_events_since(tenant_a.schema_name, str(run.id))
    # the closing event follows what the dead worker had published (its row never said how far it got)
    assert events[-1]["type"] == "run_finished" and events[-1]["data"]["status"] == "failed"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_stopping_a_run_whose_worker_was_killed_closes_it_at_once_with_what_it_streamed(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant, own_queue: str
) -> None:
    """SIGKILL the worker in the middle of an answer, then stop the run: nothing is left to see the stop flag, and
    the task's redelivery is minutes away (the broker's visibility timeout, left at its default here), so the stop
    closes the run itself, once the run's liveness key has expired (2 s here), with the text it had streamed."""
    import os
    import signal

    from conftest import worker_process

    published_agent(mode="chat")
    fake_llm.script(Reply(content="a long slow answer " * 50, token_gap_s=0.1))
    with worker_process(own_queue, background=False, RUN_ALIVE_TTL_S="2") as first:
        run = start(committed, tenant_a, "helper")
        deadline = time.monotonic() + 30
        while sum(e["type"] == "text_delta" for e in run_events_since(tenant_a.schema_name, str(run.id))) < 6:
            assert time.monotonic() < deadline, "the worker never started the run"
            time.sleep(0.05)
        os.killpg(first["process"].pid, signal.SIGKILL)
        first["process"].wait()
    streamed = "".join(
        e["data"]["text"] for e in run_events_since(tenant_a.schema_name, str(run.id)) if e["type"] == "text_delta"
    )

    with override_settings(RUN_ALIVE_TTL_S=2):
        time.sleep(2.5)  # its key outlives the worker by at most its TTL
        committed.run(tenant_a, lambda: run_cancel(run=AgentRun.objects.get(pk=run.pk)))

    done = stored(committed, tenant_a, run)
    assert done.status == RunStatus.CANCELLED and "worker running it had stopped" in done.error
    assert done.output == streamed and done.output.startswith("a long slow answer")
    events = run_events_since(tenant_a.schema_name, str(run.id))
    assert events[-1]["type"] == "run_finished" and events[-1]["data"]["status"] == "cancelled"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_a_stop_closes_a_running_run_itself_only_when_its_worker_is_gone(
    committed: Committed, published_agent: Any, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    """A run with a live worker, or claimed too recently to have its liveness key yet, is left to its worker (which
    sees the stop flag at its next event); a liveness key in another tenant says nothing about this tenant's run."""
    from datetime import timedelta

    from django.utils import timezone

    from agents.runtime.events import make_event
    from agents.runtime.liveness import run_alive_key
    from agents.runtime.streams import RunEventPublisher
    from nexent_site.redis_pool import redis_client

    published_agent(slug="long", mode="chat")
    long_ago = timezone.now() - timedelta(minutes=2)

    def dead_worker_left(text: list[str], started_at: Any) -> AgentRun:
        run = committed.run(tenant_a, lambda: running_run("long", started_at=started_at))
        publisher = RunEventPublisher(tenant_a.schema_name, str(run.id))
        types = [("run_started", {}), ("step_started", {"step": 1})] + [("text_delta", {"text": t}) for t in text]
        for seq, (kind, data) in enumerate(types, start=1):
            publisher.publish(make_event(EventType(kind), run_id=str(run.id), seq=seq, data=data))
        publisher.close()
        return run

    def cancel(run: AgentRun) -> AgentRun:
        return committed.run(tenant_a, lambda: run_cancel(run=AgentRun.objects.get(pk=run.pk)))

    alive = dead_worker_left(["Still "], long_ago)
    redis_client().set(run_alive_key(tenant_a.schema_name, str(alive.id)), "1", ex=30)
    just_claimed = dead_worker_left([], timezone.now())
    orphaned = dead_worker_left(["The answer ", "is forty"], long_ago)
    redis_client().set(run_alive_key(tenant_b.schema_name, str(orphaned.id)), "1", ex=30)  # another tenant's

    assert cancel(alive).status == RunStatus.RUNNING
    assert cancel(just_claimed).status == RunStatus.RUNNING
    closed = cancel(orphaned)
    assert (closed.status, closed.output) == (RunStatus.CANCELLED, "The answer is forty")
    assert [e["type"] for e in run_events_since(tenant_a.schema_name, str(orphaned.id))][-1] == "run_finished"
    # and stopping it again changes nothing
    assert cancel(orphaned).status == RunStatus.CANCELLED
    assert [e["type"] for e in run_events_since(tenant_a.schema_name, str(orphaned.id))].count("run_finished") == 1
    for run in (alive, orphaned):
        redis_client().delete(run_alive_key(tenant_a.schema_name, str(run.id)))
        redis_client().delete(run_alive_key(tenant_b.schema_name, str(run.id)))


def test_closing_a_run_whose_worker_died_gives_back_its_provider_slot(
    committed: Committed, published_agent: Any, tenant_a: Tenant
) -> None:
    """A provider serving one run at a time, held by a run whose worker died: the slot would free itself only after
    the run's timeout and a minute. Closing the run (here by a stop) gives it back at once."""
    from datetime import timedelta

    from django.utils import timezone

    from agents.services.runs import _providers_for, _run_slots

    published_agent(slug="one-lane", mode="chat", provider={"max_concurrency": 1})
    run = committed.run(tenant_a, lambda: running_run("one-lane", started_at=timezone.now() - timedelta(minutes=2)))

    def slots_of(holder: AgentRun) -> list:
        return [slot for _, slot in _run_slots(holder, _providers_for(holder.spec))]

    def take_for_dead_worker_then_try_another() -> tuple[bool, bool]:
        [held] = slots_of(run)
        assert held.try_acquire()  # as the dead worker took it
        [wanted] = slots_of(running_run("one-lane"))
        refused = wanted.try_acquire()
        run_cancel(run=AgentRun.objects.get(pk=run.pk))
        taken = wanted.try_acquire()
        wanted.release()
        return refused, taken

    refused_before, taken_after = committed.run(tenant_a, take_for_dead_worker_then_try_another)

    assert (refused_before, taken_after) == (False, True)
    assert stored(committed, tenant_a, run).status == RunStatus.CANCELLED


def test_a_waiting_run_starts_as_soon_as_the_run_holding_its_slot_ends(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant, own_queue: str
) -> None:
    """A provider serves one run at a time; the second run waits in line. Its task's own next try is set far off
    here (RUN_SLOT_RETRY_S=30: 15 s at the earliest), so a start within a few seconds of the first run's end is the
    first run waking it."""
    from conftest import worker_process
    from nexent_site.redis_pool import redis_client

    published_agent(slug="one-lane", mode="chat", provider={"max_concurrency": 1})
    fake_llm.script(*[Reply(content=" ".join(["tok"] * 10), token_gap_s=0.1) for _ in range(3)])
    with worker_process(own_queue, background=False, RUN_SLOT_RETRY_S="30"):
        first = start(committed, tenant_a, "one-lane")
        second = start(committed, tenant_a, "one-lane")
        cancelled = start(committed, tenant_a, "one-lane")
        time.sleep(0.5)  # the second and the third wait in line
        committed.run(tenant_a, lambda: run_cancel(run=AgentRun.objects.get(pk=cancelled.pk)))
        a, b = follow(tenant_a, first, timeout=14), follow(tenant_a, second, timeout=14)

    assert a[-1]["data"]["status"] == b[-1]["data"]["status"] == "succeeded"
    # either may have taken the slot first (two worker processes take the two tasks at once)
    holder, waiter = sorted((a, b), key=lambda events: next(e["ts"] for e in events if e["type"] == "run_started"))
    holder_ended = holder[-1]["ts"]
    waiter_started = next(e["ts"] for e in waiter if e["type"] == "run_started")
    assert holder_ended - 1 <= waiter_started < holder_ended + 5
    # nobody is left in line: the started run left it, the cancelled one was taken out of it
    assert not [*redis_client().scan_iter(f"nexent:{tenant_a.schema_name}:*waiting*")]
    assert not [*redis_client().scan_iter(f"nexent:{tenant_a.schema_name}:*:waiters")]


def test_runs_wait_in_line_per_tenant() -> None:
    """Tenant A's and tenant B's runs may have the same provider id (each schema counts from 1): a run ending in B
    wakes B's waiter, never A's."""
    from agents.runtime.limits import provider_slots_key
    from agents.runtime.waiters import run_waiting_add, run_waiting_next

    run_id = str(uuid.uuid4())
    a_key, b_key = provider_slots_key("alpha", "1"), provider_slots_key("beta", "1")
    run_waiting_add("alpha", a_key, run_id, task="agents.tasks.agent_run_execute", args=["a-run"])
    run_waiting_add("beta", b_key, run_id, task="agents.tasks.agent_run_execute", args=["b-run"])

    assert run_waiting_next("beta", b_key)["args"] == ["b-run"]
    assert run_waiting_next("beta", b_key) is None
    assert run_waiting_next("alpha", a_key)["args"] == ["a-run"]
