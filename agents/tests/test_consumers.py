"""The run events websocket on the real ASGI application and the real Redis channel layer, with runs
executed by a real Celery worker against the local OpenAI-compatible test server."""

import asyncio
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator
from django.test import Client

from agents.models import AgentRun, RunStatus
from agents.runtime.streams import run_events_follow
from agents.services.runs import run_start
from conftest import PASSWORD, Committed, host_of, owner_email
from nexent_site.asgi import application
from nexent_site.testing.fake_openai import FakeOpenAI, Reply
from tenants.models import Tenant

pytestmark = [pytest.mark.django_db(transaction=False), pytest.mark.usefixtures("celery_worker")]


def socket(tenant: Tenant, path: str, cookie: str | None) -> WebsocketCommunicator:
    host = host_of(tenant)
    headers = [(b"host", host.encode()), (b"origin", f"http://{host}".encode())]
    if cookie:
        headers.append((b"cookie", f"nexent_session={cookie}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


async def receive_until_finished(communicator: WebsocketCommunicator, timeout: float = 30) -> list[dict]:
    events = []
    while True:
        event = await communicator.receive_json_from(timeout=timeout)
        events.append(event)
        if event["type"] == "run_finished":
            return events


def start_run(committed: Committed, tenant: Tenant, slug: str, user_email: str = "") -> AgentRun:
    from agents.models import Agent

    return committed.run(
        tenant,
        lambda: run_start(agent=Agent.objects.get(slug=slug), messages="hi", trigger="api", user_email=user_email),
    )


async def test_events_are_relayed_live_and_resumed_without_gaps_or_duplicates(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    # given: a slow streamed answer and a logged-in owner
    await asyncio.to_thread(published_agent, slug="streamer", mode="chat")
    fake_llm.script(Reply(content=" ".join(f"w{i}" for i in range(20)), token_gap_s=0.05))
    cookie = await asyncio.to_thread(committed.session_cookie, tenant_a, owner_email("alpha"))
    run = await asyncio.to_thread(start_run, committed, tenant_a, "streamer")

    # when: a first connection reads a few events, then drops
    first = socket(tenant_a, f"/ws/runs/{run.id}/", cookie)
    assert (await first.connect())[0]
    seen = [await first.receive_json_from(timeout=20) for _ in range(5)]
    await first.disconnect()

    # and a second one resumes after the last sequence number it saw
    second = socket(tenant_a, f"/ws/runs/{run.id}/?after={seen[-1]['seq']}", cookie)
    assert (await second.connect())[0]
    rest = await receive_until_finished(second)
    await second.disconnect()

    # then: together exactly the run's events, in order, once each
    seqs = [e["seq"] for e in seen + rest]
    assert seqs == list(range(1, len(seqs) + 1))
    all_events = await asyncio.to_thread(lambda: list(run_events_follow(tenant_a.schema_name, str(run.id))))
    assert seen + rest == all_events
    assert "".join(e["data"]["text"] for e in all_events if e["type"] == "text_delta").startswith("w0 w1")


async def test_stop_frame_cancels_the_run(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    await asyncio.to_thread(published_agent, slug="stoppable", mode="chat")
    fake_llm.script(Reply(content=" ".join(["x"] * 100), token_gap_s=0.05))
    cookie = await asyncio.to_thread(committed.session_cookie, tenant_a, owner_email("alpha"))
    run = await asyncio.to_thread(start_run, committed, tenant_a, "stoppable")

    communicator = socket(tenant_a, f"/ws/runs/{run.id}/", cookie)
    assert (await communicator.connect())[0]
    while (await communicator.receive_json_from(timeout=20))["type"] != "text_delta":
        pass
    await communicator.send_json_to({"type": "stop"})
    events = await receive_until_finished(communicator)
    await communicator.disconnect()

    assert events[-1]["data"]["status"] == RunStatus.CANCELLED


@pytest.mark.parametrize("who", ["anonymous", "other-tenant", "member-not-owner", "malformed-id"])
async def test_runs_are_refused_to_those_who_may_not_see_them(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant, tenant_b: Tenant, who: str
) -> None:
    await asyncio.to_thread(published_agent, slug="guarded", mode="chat")
    run = await asyncio.to_thread(start_run, committed, tenant_a, "guarded", "someone@alpha.test")
    path, tenant, cookie = f"/ws/runs/{run.id}/", tenant_a, None
    if who == "other-tenant":  # B's owner, on B's domain, asking for A's run id
        tenant = tenant_b
        cookie = await asyncio.to_thread(committed.session_cookie, tenant_b, owner_email("beta"))
    elif who == "member-not-owner":  # a member of A who did not start the run
        await asyncio.to_thread(committed.user, tenant_a, email="member@alpha.test")
        cookie = await asyncio.to_thread(committed.session_cookie, tenant_a, "member@alpha.test")
    elif who == "malformed-id":
        cookie = await asyncio.to_thread(committed.session_cookie, tenant_a, owner_email("alpha"))
        path = "/ws/runs/not-a-uuid/"

    communicator = socket(tenant, path, cookie)
    connected, code = await communicator.connect()
    assert not connected
    assert code == (4401 if who == "anonymous" else 4404)
    await communicator.disconnect()


def test_the_playground_runs_the_draft_through_a_worker(
    client: Client, committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    agent = published_agent(slug="drafty", mode="chat", role_prompt="published prompt")
    committed.run(tenant_a, lambda: type(agent).objects.filter(pk=agent.pk).update(role_prompt="draft prompt"))
    client.post("/admin/login/", {"username": owner_email("alpha"), "password": PASSWORD}, HTTP_HOST=host_of(tenant_a))
    page = client.get(f"/admin/agents/agent/{agent.pk}/playground/", HTTP_HOST=host_of(tenant_a))
    assert page.status_code == 200 and b"Run draft" in page.content

    # The admin view commits its own transaction in production; here the test transaction holds it, so the
    # run is started through the same service from a committed connection.
    response = client.post(f"/admin/agents/agent/{agent.pk}/playground/", {"message": ""}, HTTP_HOST=host_of(tenant_a))
    assert response.status_code == 400 and "message" in response.json()["errors"]

    run = committed.run(
        tenant_a,
        lambda: run_start(agent=type(agent).objects.get(pk=agent.pk), messages="hi", trigger="playground", draft=True),
    )
    events = list(run_events_follow(tenant_a.schema_name, str(run.id), timeout_s=30))
    assert events[-1]["data"]["status"] == "succeeded"
    assert fake_llm.chat_requests()[-1]["messages"][0]["content"] == "draft prompt"


async def test_events_dropped_by_the_channel_layer_are_filled_from_the_stream(
    committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    """Redis pub/sub loses what is published while a subscriber connection is being re-established; the relay
    notices the gap in `seq` and fills it from the run's Redis stream."""
    import json

    from asgiref.sync import sync_to_async
    from channels.layers import get_channel_layer

    from agents.runtime.events import EventType, make_event
    from agents.runtime.streams import redis_client, run_group_name, run_stream_key

    await asyncio.to_thread(published_agent, slug="lossy", mode="chat")
    cookie = await asyncio.to_thread(committed.session_cookie, tenant_a, owner_email("alpha"))

    def queued_run() -> AgentRun:  # a run no worker will execute: we play the worker's part below
        from agents.models import Agent

        agent = Agent.objects.get(slug="lossy")
        return AgentRun.objects.create(
            agent=agent, version=agent.published_version, spec=agent.published_version.spec, trigger="api", input=[]
        )

    run = await asyncio.to_thread(committed.run, tenant_a, queued_run)
    communicator = socket(tenant_a, f"/ws/runs/{run.id}/", cookie)
    assert (await communicator.connect())[0]

    events = [make_event(EventType.TEXT_DELTA, run_id=str(run.id), seq=n, data={"text": f"t{n}"}) for n in range(1, 6)]

    def append_all() -> None:
        client = redis_client()
        for event in events:
            client.xadd(
                run_stream_key(tenant_a.schema_name, str(run.id)), {"event": json.dumps(event)}, id=f"{event['seq']}-1"
            )
        client.close()

    await sync_to_async(append_all)()
    layer = get_channel_layer()
    for event in (events[0], events[1], events[4]):  # 3 and 4 are "dropped"
        await layer.group_send(run_group_name(tenant_a.schema_name, str(run.id)), {"type": "run.event", "event": event})

    received = [await communicator.receive_json_from(timeout=10) for _ in range(5)]
    await communicator.disconnect()
    assert [e["seq"] for e in received] == [1, 2, 3, 4, 5]
    assert await communicator.receive_nothing(timeout=0.2)
    await asyncio.to_thread(  # close the hand-played run, as the worker would have
        committed.run, tenant_a, lambda: AgentRun.objects.filter(pk=run.pk).update(status="succeeded", last_seq=5)
    )
