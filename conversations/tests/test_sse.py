"""The same chat flow as server-sent events, over real HTTP from the real ASGI server (uvicorn), with a
real worker; the model is the local OpenAI-compatible test server."""

from typing import Any

import pytest
import requests

from accounts.models import User
from agents.models import Agent
from conftest import Committed, owner_email, read_sse
from conversations.models import Conversation
from conversations.services import conversation_message_send, conversation_start
from nexent_site.testing.fake_openai import FakeOpenAI, Reply
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


def test_a_turn_streams_as_server_sent_events_and_resumes(
    asgi_server: dict, committed: Committed, fake_llm: FakeOpenAI, published_agent: Any, tenant_a: Tenant
) -> None:
    published_agent(slug="sse-bot", mode="chat")
    fake_llm.script(Reply(content="alpha beta gamma delta epsilon", token_gap_s=0.05))

    def start() -> tuple[Conversation, str]:
        owner = User.objects.get(email=owner_email("alpha"))
        conversation = conversation_start(user=owner, agent=Agent.objects.get(slug="sse-bot"))
        _, answer = conversation_message_send(conversation=conversation, user=owner, content="go")
        return conversation, str(answer.run_id)

    committed.on_teardown(tenant_a, lambda: Conversation.objects.filter(agent__slug="sse-bot").delete())
    conversation, run_id = committed.run(tenant_a, start)
    cookie = {"nexent_session": committed.session_cookie(tenant_a, owner_email("alpha"))}
    # *.localhost resolves in browsers, not in this resolver: connect to loopback, name the tenant in Host
    url = f"http://127.0.0.1:{asgi_server['port']}/chat/{conversation.pk}/runs/{run_id}/events/"
    host = {"Host": f"alpha.localhost:{asgi_server['port']}"}

    with requests.get(url, cookies=cookie, headers=host, stream=True, timeout=30) as response:
        assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
        events = read_sse(response)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert "".join(e["data"]["text"] for e in events if e["type"] == "text_delta") == "alpha beta gamma delta epsilon"

    with requests.get(url, cookies=cookie, headers={**host, "Last-Event-ID": "3"}, stream=True, timeout=30) as response:
        assert read_sse(response) == events[3:]

    # another user, or nobody, gets a 404 for the same URL
    committed.user(tenant_a, email="stranger@alpha.test")
    stranger = {"nexent_session": committed.session_cookie(tenant_a, "stranger@alpha.test")}
    assert requests.get(url, cookies=stranger, headers=host, timeout=10).status_code == 404
    assert requests.get(url, headers=host, timeout=10, allow_redirects=False).status_code == 404
