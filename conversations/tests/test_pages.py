"""The chat pages, server-rendered: home, conversation view, sidebar search, rename/archive/delete,
feedback, safe Markdown, and isolation between users and tenants."""

import pytest
from django.test import Client
from django_tenants.utils import tenant_context

from accounts.models import User
from accounts.services import user_create
from agents.models import Agent
from agents.services.agents import agent_publish
from conftest import PASSWORD, host_of, owner_email
from conversations.models import Conversation, Message
from conversations.rendering import render_markdown
from conversations.services import conversation_start
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(client: Client, tenant_a: Tenant) -> dict:
    with tenant_context(tenant_a):
        agent = Agent.objects.create(
            name="Helper Bot", slug="helper-bot", greeting="Hello, I help.", example_questions=["What can you do?"]
        )
        agent_publish(agent=agent)
        Agent.objects.create(name="Unpublished Draft", slug="draft-only")
        owner = User.objects.get(email=owner_email("alpha"))
        conversation = conversation_start(user=owner, agent=agent, title="Budget planning")
        Message.objects.create(conversation=conversation, role="user", content="How do I plan a zebra budget?")
        Message.objects.create(conversation=conversation, role="assistant", content="Use *care*.")
    client.post(
        "/accounts/login/", {"username": owner_email("alpha"), "password": PASSWORD}, HTTP_HOST=host_of(tenant_a)
    )
    return {"agent": agent, "conversation": conversation, "host": {"HTTP_HOST": host_of(tenant_a)}}


def test_home_lists_published_agents_with_greeting_and_examples(client: Client, setup: dict) -> None:
    page = client.get("/", **setup["host"]).content.decode()
    assert "Helper Bot" in page and "Hello, I help." in page and "What can you do?" in page
    assert "Unpublished Draft" not in page
    assert "Budget planning" in page  # the sidebar


def test_the_chat_page_shows_the_history_rendered(client: Client, setup: dict) -> None:
    page = client.get(f"/chat/{setup['conversation'].pk}/", **setup["host"]).content.decode()
    assert "How do I plan a zebra budget?" in page and "<em>care</em>" in page
    assert f'data-ws="/ws/chat/{setup["conversation"].pk}/"' in page


def test_what_a_person_wrote_is_shown_as_written(client: Client, setup: dict, tenant_a: Tenant) -> None:
    """As the page shows it while sending (plain text, lines kept): not as markdown, and never as HTML."""
    with tenant_context(tenant_a):
        Message.objects.create(
            conversation=setup["conversation"], role="user", content="Keep *these* stars\n<b>and tags</b>"
        )
    page = client.get(f"/chat/{setup['conversation'].pk}/", **setup["host"]).content.decode()
    assert '<div class="content">Keep *these* stars\n&lt;b&gt;and tags&lt;/b&gt;</div>' in page
    assert "<em>care</em>" in page  # answers are still markdown


def test_starting_a_conversation_saves_the_first_message(client: Client, setup: dict, tenant_a: Tenant) -> None:
    response = client.post("/chat/new/", {"agent": "helper-bot", "message": "Hi there"}, **setup["host"])
    assert response.status_code == 302
    with tenant_context(tenant_a):
        conversation = Conversation.objects.exclude(pk=setup["conversation"].pk).get()
        roles = list(conversation.messages.values_list("role", "status"))
    assert roles == [("user", "completed"), ("assistant", "pending")]
    assert response["Location"] == f"/chat/{conversation.pk}/"
    assert client.post("/chat/new/", {"agent": "draft-only"}, **setup["host"]).status_code == 404


def test_search_finds_titles_and_message_text(client: Client, setup: dict) -> None:
    assert "Budget planning" in client.get("/?q=zebra", **setup["host"]).content.decode()
    assert "Budget planning" in client.get("/?q=budget", **setup["host"]).content.decode()
    assert "Budget planning" not in client.get("/?q=giraffe", **setup["host"]).content.decode()


def test_rename_archive_restore_delete(client: Client, setup: dict, tenant_a: Tenant) -> None:
    url, host = f"/chat/{setup['conversation'].pk}/edit/", setup["host"]
    client.post(url, {"action": "rename", "title": "Zebra money"}, **host)
    client.post(url, {"action": "archive"}, **host)
    with tenant_context(tenant_a):
        conversation = Conversation.objects.get(pk=setup["conversation"].pk)
        assert (conversation.title, conversation.archived) == ("Zebra money", True)
    assert "Zebra money" not in client.get("/", **host).content.decode()
    assert "Zebra money" in client.get("/?archived=1", **host).content.decode()
    client.post(url, {"action": "restore"}, **host)
    client.post(url, {"action": "delete"}, **host)
    with tenant_context(tenant_a):
        assert not Conversation.objects.filter(pk=setup["conversation"].pk).exists()
        assert not Message.objects.filter(conversation_id=setup["conversation"].pk).exists()


def test_feedback_on_answers(client: Client, setup: dict, tenant_a: Tenant) -> None:
    with tenant_context(tenant_a):
        answer = Message.objects.get(conversation=setup["conversation"], role="assistant")
    client.post(f"/messages/{answer.pk}/feedback/", {"feedback": "dislike", "comment": "too short"}, **setup["host"])
    with tenant_context(tenant_a):
        answer.refresh_from_db()
    assert (answer.feedback, answer.feedback_comment) == ("dislike", "too short")


def test_other_users_get_nothing(client: Client, setup: dict, tenant_a: Tenant, tenant_b: Tenant) -> None:
    conversation = setup["conversation"]
    with tenant_context(tenant_a):
        user_create(email="nosy@alpha.test", password=PASSWORD)
        answer = Message.objects.get(conversation=conversation, role="assistant")
    nosy = Client()
    nosy.post("/accounts/login/", {"username": "nosy@alpha.test", "password": PASSWORD}, HTTP_HOST=host_of(tenant_a))
    host = {"HTTP_HOST": host_of(tenant_a)}
    assert nosy.get(f"/chat/{conversation.pk}/", **host).status_code == 404
    assert nosy.post(f"/chat/{conversation.pk}/edit/", {"action": "delete"}, **host).status_code == 404
    assert nosy.post(f"/messages/{answer.pk}/feedback/", {"feedback": "like"}, **host).status_code == 404
    assert "Budget planning" not in nosy.get("/?q=budget", **host).content.decode()
    # the owner's cookie on tenant B's domain is a stranger there
    assert client.get(f"/chat/{conversation.pk}/", HTTP_HOST=host_of(tenant_b)).status_code == 302
    with tenant_context(tenant_a):
        assert Conversation.objects.filter(pk=conversation.pk).exists()


def test_markdown_is_rendered_safely() -> None:
    html = render_markdown(
        "<script>alert(1)</script> **bold** [x](https://example.com) [bad](javascript:alert(1)) "
        "<img src=x onerror=alert(1)>"
    )
    assert "<script" not in html and "<img" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;" in html  # shown as text, not run
    assert "<strong>bold</strong>" in html
    assert 'rel="noopener noreferrer"' in html and 'href="https://example.com"' in html


def test_staff_see_conversations_and_feedback_in_the_admin(client: Client, setup: dict) -> None:
    host = setup["host"]
    listing = client.get("/admin/conversations/conversation/?q=zebra", **host)
    assert listing.status_code == 200 and "Budget planning" in listing.content.decode()
    detail = client.get(f"/admin/conversations/conversation/{setup['conversation'].pk}/change/", **host)
    assert "How do I plan a zebra budget?" in detail.content.decode()
    assert client.get("/admin/conversations/message/?feedback__exact=dislike", **host).status_code == 200


def test_pages_speak_chinese_when_asked(client: Client, setup: dict) -> None:
    page = client.get("/", HTTP_ACCEPT_LANGUAGE="zh-hans", **setup["host"]).content.decode()
    assert "开始对话" in page and "搜索会话" in page
    assert "Start a conversation" in client.get("/", HTTP_ACCEPT_LANGUAGE="en", **setup["host"]).content.decode()


def test_the_pages_say_when_documents_the_agent_searches_are_still_being_indexed(
    client: Client, setup: dict, tenant_a: Tenant, tenant_b: Tenant
) -> None:
    """Answers cannot draw on a document before it is indexed (a fresh install's handbook, a file just uploaded):
    the page says so before anyone asks. Another tenant's documents, in a knowledge base of the same slug, do not
    count."""
    from agents.models import ModelProvider
    from agents.services.agents import agent_tool_add
    from files.models import StoredFile
    from knowledge.models import Document, KnowledgeBase

    def documents(statuses: list[str]) -> None:
        provider = ModelProvider.objects.create(name="Embed", kind="embedding", model_name="e", base_url="http://e/v1")
        kb = KnowledgeBase.objects.create(
            name="Manual", slug="manual", embedding_provider=provider, embedding_dimension=8
        )
        for number, status in enumerate(statuses):
            stored = StoredFile.objects.create(
                original_name=f"{number}.txt", size=1, content_type="text/plain", sha256="0", storage_key=f"k/{number}"
            )
            Document.objects.create(knowledge_base=kb, file=stored, title=f"Doc {number}", status=status)

    with tenant_context(tenant_b):
        documents(["queued"] * 5)
    with tenant_context(tenant_a):
        documents(["queued", "embedding", "ready", "failed"])
        agent = Agent.objects.get(slug="helper-bot")
        agent_tool_add(agent=agent, tool="knowledge_search", config={"knowledge_bases": ["manual"]})
        agent_publish(agent=agent)
    url = f"/chat/{setup['conversation'].pk}/"

    page = client.get(url, **setup["host"]).content.decode()
    assert "2 documents this agent searches are still being indexed" in page
    home = client.get("/", **setup["host"]).content.decode()  # before a conversation starts, too
    assert "2 documents this agent searches are still being indexed" in home
    assert "仍在建立索引" in client.get(url, HTTP_ACCEPT_LANGUAGE="zh-hans", **setup["host"]).content.decode()

    with tenant_context(tenant_a):
        Document.objects.filter(status__in=["queued", "embedding"]).update(status="ready")
    assert "still being indexed" not in client.get(url, **setup["host"]).content.decode()
    assert "still being indexed" not in client.get("/", **setup["host"]).content.decode()
