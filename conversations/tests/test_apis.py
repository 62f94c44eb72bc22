"""REST API of conversations and messages. Most tests use DRF's test client on the tenant's own domain, with
real API keys, PostgreSQL and Redis; the end-to-end tests send messages over real HTTP to the real ASGI
server (uvicorn) with a real Celery worker. Faked: only the external model provider (the local
OpenAI-compatible server, `fake_llm`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django_tenants.utils import tenant_context

from agents.models import Agent, AgentRun, ModelProvider, UsageRecord
from agents.services.agents import agent_publish
from agents.services.providers import provider_save
from api.models import IdempotentRequest
from api.tests.fixtures import api_client, key_for
from conftest import PASSWORD, Committed, host_of, owner_email, read_sse
from conversations.models import Conversation, Message
from conversations.services import conversation_start
from nexent_site.testing.fake_openai import FakeOpenAI, Reply
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def published(tenant: Tenant, slug: str = "api-chat") -> Agent:
    """A published agent (in the test's transaction: no worker sees it, which these tests do not need)."""
    with tenant_context(tenant):
        chat = ModelProvider.objects.filter(name="API conv chat").first() or provider_save(
            provider=ModelProvider(name="API conv chat", kind="chat", base_url="http://127.0.0.1:9/v1", model_name="m")
        )
        agent = Agent.objects.create(name=slug.title(), slug=slug, chat_provider=chat, mode="chat")
        agent_publish(agent=agent)
        return agent


def conversation_of(tenant: Tenant, email: str, slug: str = "api-chat", title: str = "") -> Conversation:
    from accounts.models import User

    with tenant_context(tenant):
        agent = Agent.objects.filter(slug=slug).first() or published(tenant, slug)
        return conversation_start(user=User.objects.get(email=email), agent=agent, title=title)


def member(tenant: Tenant, email: str) -> None:
    from accounts.services import user_create

    with tenant_context(tenant):
        user_create(email=email, password=PASSWORD)


def error(response: Any) -> dict:
    return response.json()["error"]


# --- conversations ------------------------------------------------------------------------------------------
def test_a_conversation_is_started_listed_renamed_archived_and_deleted(tenant_a: Tenant, api_as: Any) -> None:
    # given
    published(tenant_a)
    chat = api_as("chat")

    # when
    created = chat.post("/api/v1/conversations/", {"agent": "api-chat", "title": "Trip plans"}, format="json")

    # then
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["agent"] == {"slug": "api-chat", "name": "Api-Chat"} and body["title"] == "Trip plans"
    conversation_id = body["id"]
    assert [c["id"] for c in chat.get("/api/v1/conversations/").json()["results"]] == [conversation_id]
    assert chat.get(f"/api/v1/conversations/{conversation_id}/").json()["title"] == "Trip plans"

    renamed = chat.patch(f"/api/v1/conversations/{conversation_id}/", {"title": "Paris trip"}, format="json")
    assert renamed.status_code == 200 and renamed.json()["title"] == "Paris trip"
    archived = chat.patch(f"/api/v1/conversations/{conversation_id}/", {"archived": True}, format="json")
    assert archived.json()["archived"] is True
    assert chat.get("/api/v1/conversations/").json()["results"] == []
    assert [c["id"] for c in chat.get("/api/v1/conversations/?archived=true").json()["results"]] == [conversation_id]

    assert chat.delete(f"/api/v1/conversations/{conversation_id}/").status_code == 204
    assert chat.get(f"/api/v1/conversations/{conversation_id}/").status_code == 404
    with tenant_context(tenant_a):
        assert not Conversation.objects.filter(pk=conversation_id).exists()


def test_q_searches_titles_and_message_text(tenant_a: Tenant, api_as: Any) -> None:
    # given
    by_title = conversation_of(tenant_a, owner_email("alpha"), title="Quarterly budget")
    by_text = conversation_of(tenant_a, owner_email("alpha"), title="Misc")
    conversation_of(tenant_a, owner_email("alpha"), title="Unrelated")
    with tenant_context(tenant_a):
        Message.objects.create(conversation=by_text, role="user", content="what about the BUDGET for Q3?")
    chat = api_as("chat")

    # when
    found = chat.get("/api/v1/conversations/?q=budget").json()["results"]

    # then
    assert {c["id"] for c in found} == {str(by_title.pk), str(by_text.pk)}
    assert chat.get("/api/v1/conversations/?q=nothing-like-this").json()["results"] == []


@pytest.mark.parametrize(
    ("method", "path", "payload", "field"),
    [
        ("post", "/api/v1/conversations/", {"agent": "no-such-agent"}, "agent"),
        ("post", "/api/v1/conversations/", {"agent": "unpublished"}, "agent"),
        ("post", "/api/v1/conversations/", {}, "agent"),
        ("post", "/api/v1/conversations/", {"agent": "api-chat", "title": "x" * 201}, "title"),
        ("post", "/api/v1/conversations/", {"agent": "api-chat", "topic": "x"}, "topic"),
        ("patch", "/api/v1/conversations/{id}/", {"archived": "perhaps"}, "archived"),
        ("patch", "/api/v1/conversations/{id}/", {"title": "a\x00b"}, "title"),
        ("patch", "/api/v1/conversations/{id}/", {"agent": "api-chat"}, "agent"),
        ("get", "/api/v1/conversations/?q=" + "x" * 201, None, "q"),
        ("get", "/api/v1/conversations/?archived=perhaps", None, "archived"),
        ("get", "/api/v1/conversations/?page=0", None, "page"),
        ("get", "/api/v1/conversations/?page_size=100000", None, "page_size"),
    ],
)
def test_invalid_conversation_requests_are_refused_naming_the_field(
    tenant_a: Tenant, api_as: Any, method: str, path: str, payload: dict | None, field: str
) -> None:
    conversation = conversation_of(tenant_a, owner_email("alpha"), title="Keep")
    with tenant_context(tenant_a):
        Agent.objects.create(name="Unpublished", slug="unpublished")
    client = api_as("chat")
    url = path.replace("{id}", str(conversation.pk))
    response = getattr(client, method)(url, payload, format="json") if payload is not None else client.get(url)
    assert response.status_code == 400, response.content
    assert field in error(response)["fields"], error(response)
    with tenant_context(tenant_a):
        assert list(Conversation.objects.values_list("title", flat=True)) == ["Keep"]


@pytest.mark.parametrize(
    "body", [r'{"agent": "\ud800"}', r'{"agent": "a\u0000"}', r'{"agent": "api-chat", "title": "\ud800"}']
)
def test_text_the_database_cannot_hold_is_refused(tenant_a: Tenant, api_as: Any, body: str) -> None:
    published(tenant_a)
    response = api_as("chat").post("/api/v1/conversations/", body, content_type="application/json")
    assert response.status_code == 400, response.content


def test_conversations_need_the_chat_scope(tenant_a: Tenant, api_as: Any) -> None:
    response = api_as("files").get("/api/v1/conversations/")
    assert response.status_code == 403
    assert error(response) == {"code": "missing_scope", "message": "This needs the “chat” scope."}


def test_another_users_conversation_is_not_found(tenant_a: Tenant, api_as: Any) -> None:
    # given: the owner's conversation, and a member of the same organisation
    theirs = conversation_of(tenant_a, owner_email("alpha"), title="Owner's")
    member(tenant_a, "nosy@alpha.test")
    nosy = api_as("chat", email="nosy@alpha.test")
    base = f"/api/v1/conversations/{theirs.pk}"

    # when / then
    assert nosy.get("/api/v1/conversations/").json()["results"] == []
    assert nosy.get(f"{base}/").status_code == 404
    assert nosy.patch(f"{base}/", {"title": "mine now"}, format="json").status_code == 404
    assert nosy.delete(f"{base}/").status_code == 404
    assert nosy.get(f"{base}/messages/").status_code == 404
    assert nosy.post(f"{base}/messages/", {"content": "hi"}, format="json").status_code == 404
    with tenant_context(tenant_a):
        assert Conversation.objects.get(pk=theirs.pk).title == "Owner's"
        assert not Message.objects.filter(conversation=theirs).exists()


def test_another_tenant_can_neither_see_nor_change_a_conversation(
    tenant_a: Tenant, tenant_b: Tenant, api_as: Any, client: Client
) -> None:
    # given: A's conversation with a message and a run
    conversation = conversation_of(tenant_a, owner_email("alpha"), title="Alpha secret")
    sent = api_as("chat").post(f"/api/v1/conversations/{conversation.pk}/messages/", {"content": "hi"}, format="json")
    assert sent.status_code == 201
    message_id, run_id = sent.json()["assistant_message"]["id"], sent.json()["run_id"]
    base = f"/api/v1/conversations/{conversation.pk}"

    # when / then: B's key on B's domain finds nothing
    b_chat = api_as("admin", tenant=tenant_b)
    assert b_chat.get(f"{base}/").status_code == 404
    assert b_chat.patch(f"{base}/", {"archived": True}, format="json").status_code == 404
    assert b_chat.delete(f"{base}/").status_code == 404
    assert b_chat.get(f"{base}/messages/").status_code == 404
    assert b_chat.get(f"{base}/messages/{message_id}/").status_code == 404
    assert b_chat.post(f"{base}/messages/{message_id}/stop/").status_code == 404
    assert b_chat.post(f"{base}/messages/", {"content": "hi"}, format="json").status_code == 404
    assert b_chat.get(f"/api/v1/runs/{run_id}/").status_code == 404
    # B's signed-in owner neither
    from accounts.models import User

    with tenant_context(tenant_b):
        client.force_login(User.objects.get(email=owner_email("beta")))
    assert client.get(f"{base}/", HTTP_HOST=host_of(tenant_b)).status_code == 404
    assert client.get(f"{base}/", HTTP_HOST=host_of(tenant_a)).status_code == 401
    # A's key is unknown on B's domain
    _, raw = key_for(tenant_a, scopes="chat")
    response = api_client(tenant_b, raw).get(f"{base}/")
    assert response.status_code == 401 and error(response)["code"] == "invalid_api_key"
    with tenant_context(tenant_a):
        assert Conversation.objects.get(pk=conversation.pk).archived is False
        assert AgentRun.objects.get(pk=run_id).status == "queued"


# --- messages -----------------------------------------------------------------------------------------------
def test_sending_a_message_starts_a_run_of_the_key(tenant_a: Tenant, api_as: Any) -> None:
    # given
    conversation = conversation_of(tenant_a, owner_email("alpha"))
    key, raw = key_for(tenant_a, scopes="chat")
    chat = api_client(tenant_a, raw)
    url = f"/api/v1/conversations/{conversation.pk}/messages/"

    # when
    sent = chat.post(url, {"content": "  Hello there  "}, format="json")

    # then: both messages at once, the answer pending, the run queued for a worker
    assert sent.status_code == 201, sent.content
    body = sent.json()
    assert (body["user_message"]["role"], body["user_message"]["content"]) == ("user", "Hello there")
    assert (body["assistant_message"]["status"], body["assistant_message"]["run_id"]) == ("pending", body["run_id"])
    with tenant_context(tenant_a):
        run = AgentRun.objects.get(pk=body["run_id"])
        assert (run.trigger, run.api_key_id, run.user_email) == ("api", key.pk, "owner@alpha.test")
        assert run.input == [{"role": "user", "content": "Hello there"}]
    listed = chat.get(url).json()
    assert listed["count"] == 2
    assert [(m["role"], m["status"]) for m in listed["results"]] == [("user", "completed"), ("assistant", "pending")]
    assert set(listed["results"][1]) >= {"content", "citations", "tokens_in", "tokens_out", "units", "attachments"}
    assert chat.get(f"{url}{body['user_message']['id']}/").json()["content"] == "Hello there"

    # and one turn at a time
    busy = chat.post(url, {"content": "again"}, format="json")
    assert busy.status_code == 409 and error(busy)["code"] == "busy"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"content": "   "}, "content"),
        ({}, "content"),
        ({"content": "x" * 20_001}, "content"),
        ({"content": 42, "extra": True}, "extra"),
        ({"content": "hi", "files": ["not a file"]}, "files"),
    ],
)
def test_invalid_messages_are_refused_naming_the_field(
    tenant_a: Tenant, api_as: Any, payload: dict, field: str
) -> None:
    conversation = conversation_of(tenant_a, owner_email("alpha"))
    response = api_as("chat").post(f"/api/v1/conversations/{conversation.pk}/messages/", payload, format="json")
    assert response.status_code == 400, response.content
    assert field in error(response)["fields"]
    with tenant_context(tenant_a):
        assert not Message.objects.filter(conversation=conversation).exists()


def test_an_archived_conversation_takes_no_message(tenant_a: Tenant, api_as: Any) -> None:
    conversation = conversation_of(tenant_a, owner_email("alpha"))
    chat = api_as("chat")
    chat.patch(f"/api/v1/conversations/{conversation.pk}/", {"archived": True}, format="json")
    response = chat.post(f"/api/v1/conversations/{conversation.pk}/messages/", {"content": "hi"}, format="json")
    assert response.status_code == 409 and error(response)["code"] == "archived"


def test_a_message_with_attached_files_in_multipart(tenant_a: Tenant, api_as: Any) -> None:
    conversation = conversation_of(tenant_a, owner_email("alpha"))
    upload = SimpleUploadedFile("notes.txt", b"The launch is on Tuesday.\n", content_type="text/plain")
    response = api_as("chat").post(
        f"/api/v1/conversations/{conversation.pk}/messages/",
        {"content": "When is the launch?", "files": [upload]},
        format="multipart",
    )
    assert response.status_code == 201, response.content
    attachment = response.json()["user_message"]["attachments"][0]
    assert (attachment["name"], attachment["status"], attachment["content_type"]) == (
        "notes.txt",
        "pending",
        "text/plain",
    )


def test_a_retried_send_with_the_same_idempotency_key_starts_one_run(tenant_a: Tenant, api_as: Any) -> None:
    # given
    conversation = conversation_of(tenant_a, owner_email("alpha"))
    chat = api_as("chat")
    url = f"/api/v1/conversations/{conversation.pk}/messages/"
    headers = {"HTTP_IDEMPOTENCY_KEY": f"send-{uuid.uuid4()}"}

    # when
    first = chat.post(url, {"content": "only once"}, format="json", **headers)
    retry = chat.post(url, {"content": "only once"}, format="json", **headers)
    other = chat.post(url, {"content": "something else"}, format="json", **headers)

    # then
    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json() and retry["Idempotent-Replayed"] == "true"
    assert other.status_code == 422 and error(other)["code"] == "idempotency_key_reused"
    with tenant_context(tenant_a):
        assert AgentRun.objects.filter(agent__slug="api-chat").count() == 1
        assert Message.objects.filter(conversation=conversation).count() == 2


def test_stop_cancels_the_answers_run(tenant_a: Tenant, api_as: Any) -> None:
    conversation = conversation_of(tenant_a, owner_email("alpha"))
    chat = api_as("chat")
    url = f"/api/v1/conversations/{conversation.pk}/messages/"
    answer = chat.post(url, {"content": "long story please"}, format="json").json()["assistant_message"]
    response = chat.post(f"{url}{answer['id']}/stop/")
    assert response.status_code == 202 and response.json()["id"] == answer["id"]
    with tenant_context(tenant_a):
        assert AgentRun.objects.get(pk=answer["run_id"]).status == "cancelled"
    assert chat.post(f"{url}999999999/stop/").status_code == 404
    assert chat.get(f"{url}not-a-number/").status_code == 404


def test_listing_takes_the_same_queries_however_many_rows(tenant_a: Tenant, api_as: Any) -> None:
    # given
    chat = api_as("chat")
    chat.get("/api/v1/conversations/")  # the key's last_used_at is written once; count the steady state
    conversation = conversation_of(tenant_a, owner_email("alpha"))

    def add(count: int) -> None:
        with tenant_context(tenant_a):
            for index in range(count):
                conversation_of(tenant_a, owner_email("alpha"), title=f"extra {index}")
                message = Message.objects.create(conversation=conversation, role="assistant", content="x")
                message.citations.create(index=1, document_id=1, chunk_id=1, document_title="d")
                message.units.create(position=0, kind="final_answer", data={"text": "x"})

    def queries(path: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert chat.get(path).status_code == 200
        return len(captured)

    # when / then
    add(2)
    few = (queries("/api/v1/conversations/"), queries(f"/api/v1/conversations/{conversation.pk}/messages/"))
    add(6)
    many = (queries("/api/v1/conversations/"), queries(f"/api/v1/conversations/{conversation.pk}/messages/"))
    assert few == many


# --- end to end: a real worker, the real ASGI server --------------------------------------------------------


@pytest.fixture
def live(asgi_server: dict, committed: Committed, committed_key: Any, tenant_a: Tenant) -> Callable[..., Any]:
    """`live("POST", path, json=…)`: a request to the real server on A's domain with a committed chat key.
    The idempotency and usage records the test makes are deleted afterwards."""
    raw = committed_key(tenant_a, scopes="chat")

    def forget() -> None:
        IdempotentRequest.objects.filter(key__startswith="e2e-").delete()
        UsageRecord.objects.filter(api_key__prefix=raw[:12]).delete()

    committed.on_teardown(tenant_a, forget)

    def request(method: str, path: str, headers: dict | None = None, **kwargs: Any) -> requests.Response:
        return requests.request(
            method,
            f"http://127.0.0.1:{asgi_server['port']}{path}",
            headers={"Host": host_of(tenant_a), "Authorization": f"Bearer {raw}", **(headers or {})},
            timeout=30,
            **kwargs,
        )

    return request


def answered(live: Callable[..., Any], conversation_id: str, timeout: float = 30) -> list[dict]:
    """The conversation's messages once its latest answer is no longer being written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        messages = live("GET", f"/api/v1/conversations/{conversation_id}/messages/").json()["results"]
        if messages and messages[-1]["status"] not in ("pending", "streaming"):
            return messages
        time.sleep(0.2)
    raise AssertionError(f"no answer within {timeout}s: {messages}")


@pytest.mark.usefixtures("celery_worker")
def test_a_message_sent_over_the_api_is_answered_by_the_agent(
    live: Callable[..., Any], published_agent: Any, fake_llm: FakeOpenAI
) -> None:
    # given
    published_agent(slug="api-e2e", mode="chat")
    fake_llm.script(Reply(content="Paris is the capital of France."))
    conversation = live("POST", "/api/v1/conversations/", json={"agent": "api-e2e"})
    assert conversation.status_code == 201, conversation.text
    conversation_id = conversation.json()["id"]

    # when
    sent = live("POST", f"/api/v1/conversations/{conversation_id}/messages/", json={"content": "Capital of France?"})

    # then
    assert sent.status_code == 201, sent.text
    run_id = sent.json()["run_id"]
    messages = answered(live, conversation_id)
    assert [(m["role"], m["status"]) for m in messages] == [("user", "completed"), ("assistant", "completed")]
    assert messages[-1]["content"] == "Paris is the capital of France." and messages[-1]["tokens_out"] > 0
    assert messages[-1]["units"][-1]["kind"] == "final_answer"
    run = live("GET", f"/api/v1/runs/{run_id}/").json()
    assert (run["status"], run["output"], run["trigger"]) == ("succeeded", "Paris is the capital of France.", "api")
    events = live("GET", f"/api/v1/runs/{run_id}/events/").json()["events"]
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


@pytest.mark.usefixtures("celery_worker")
def test_a_message_sent_with_stream_true_answers_with_server_sent_events(
    live: Callable[..., Any], published_agent: Any, fake_llm: FakeOpenAI
) -> None:
    # given
    published_agent(slug="api-sse", mode="chat")
    fake_llm.script(Reply(content="one two three four five six", token_gap_s=0.03))
    conversation_id = live("POST", "/api/v1/conversations/", json={"agent": "api-sse"}).json()["id"]
    url = f"/api/v1/conversations/{conversation_id}/messages/?stream=true"
    idempotency = {"Idempotency-Key": f"e2e-{uuid.uuid4()}"}

    # when
    started = time.monotonic()
    with live("POST", url, headers=idempotency, json={"content": "count"}, stream=True) as response:
        assert time.monotonic() - started < 5, "the stream should open before the worker has done anything"
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = read_sse(response)

    # then: every event once, in order, the text as deltas, then the stored answer
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "run_started" and events[-1]["type"] == "run_finished"
    assert "".join(e["data"]["text"] for e in events if e["type"] == "text_delta") == "one two three four five six"
    assert events[-1]["data"]["status"] == "succeeded"
    assert answered(live, conversation_id)[-1]["content"] == "one two three four five six"

    # when: retried with the same Idempotency-Key, the same stream is replayed and nothing new runs
    with live("POST", url, headers=idempotency, json={"content": "count"}, stream=True) as replay:
        assert replay.headers["Idempotent-Replayed"] == "true"
        assert read_sse(replay) == events
    assert len(live("GET", f"/api/v1/conversations/{conversation_id}/messages/").json()["results"]) == 2

    # and the run's own event stream resumes after Last-Event-ID
    run_id = events[0]["run_id"]
    with live(
        "GET",
        f"/api/v1/runs/{run_id}/events/",
        headers={"Accept": "text/event-stream", "Last-Event-ID": "3"},
        stream=True,
    ) as resumed:
        assert read_sse(resumed) == events[3:]


def test_lists_are_ordered_as_asked(tenant_a: Tenant, api_as: Any) -> None:
    # given
    published(tenant_a)
    chat = api_as("chat")
    for title in ("Bravo", "Alpha", "Charlie"):
        assert (
            chat.post("/api/v1/conversations/", {"agent": "api-chat", "title": title}, format="json").status_code == 201
        )
    # when
    by_title = chat.get("/api/v1/conversations/?ordering=title").json()["results"]
    by_title_desc = chat.get("/api/v1/conversations/?ordering=-title").json()["results"]
    newest_first = chat.get("/api/v1/conversations/").json()["results"]
    # then
    assert [c["title"] for c in by_title] == ["Alpha", "Bravo", "Charlie"]
    assert [c["title"] for c in by_title_desc] == ["Charlie", "Bravo", "Alpha"]
    assert [c["title"] for c in newest_first] == ["Charlie", "Alpha", "Bravo"]
