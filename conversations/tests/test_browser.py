"""A person in a real browser: headless Chromium (Debian's package) driven by Playwright against the real
ASGI server (uvicorn), a real Celery worker and Redis; the model is the local OpenAI-compatible test server."""

import time
from typing import Any

import pytest

from agents.models import Agent
from conftest import PASSWORD, Committed, owner_email
from conversations.models import Conversation, Message
from nexent_site.testing.fake_openai import FakeOpenAI, Reply
from tenants.models import Tenant

pytestmark = pytest.mark.django_db


@pytest.fixture
def start_chat(
    browser_page: Any, asgi_server: dict, committed: Committed, published_agent: Any, tenant_a: Tenant
) -> Any:
    """Publish a chat agent `slug`, log A's owner in and start a conversation with `question`, from the home page;
    the conversations are deleted afterwards. Returns the page, on the new conversation."""

    def start(slug: str, question: str) -> Any:
        published_agent(slug=slug, mode="chat", greeting=f"Hello from {slug}.")
        committed.on_teardown(tenant_a, lambda: Conversation.objects.filter(agent__slug=slug).delete())
        page = browser_page
        page.goto(f"{asgi_server['url'](tenant_a)}/accounts/login/")
        page.fill("#id_username", owner_email("alpha"))
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_selector(f"text=Hello from {slug}.")
        page.fill(f"#first-{slug}", question)
        page.click(f"form:has(#first-{slug}) button[type=submit]")
        page.wait_for_url("**/chat/**")
        return page

    return start


def test_log_in_chat_see_tokens_stop_and_find_the_history(
    start_chat: Any, committed: Committed, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    # given: a model that streams slowly
    fake_llm.script(Reply(content=" ".join(f"word{i}" for i in range(200)), token_gap_s=0.05))

    # when: the owner logs in and starts a conversation
    page = start_chat("browser-bot", "Tell me everything")

    # then: tokens arrive one after another
    answer = page.locator("#thread article.assistant .content").last
    page.wait_for_function(
        "() => { const a = [...document.querySelectorAll('#thread article.assistant .content')].pop();"
        " return a && a.textContent.includes('word3'); }",
        timeout=30000,
    )
    first_seen = answer.text_content()
    time.sleep(0.5)
    assert len(answer.text_content()) > len(first_seen)

    # when: stopped from the keyboard (Esc: the stop button's shortcut)
    page.keyboard.press("Escape")
    page.wait_for_selector("#thread article.assistant.status-stopped", timeout=30000)
    stopped_text = page.locator("#thread article.assistant .content").last.text_content()
    assert "word0" in stopped_text and "word199" not in stopped_text

    # when: the answer that came back over the socket is liked (its form was rendered outside a request)
    page.click("#thread article.assistant.status-stopped button[value=like]")
    page.wait_for_selector("#thread article.assistant.status-stopped button.chosen[aria-pressed=true]")

    # then: the feedback is stored (the form carried the page's CSRF token: no 403)
    stopped = committed.run(
        tenant_a, lambda: Message.objects.get(conversation__agent__slug="browser-bot", status="stopped")
    )
    assert stopped.feedback == "like"

    # then: after a reload the history is there, with the stopped answer
    page.reload()
    assert page.locator("#thread article.user").first.text_content().strip() == "Tell me everything"
    assert (
        page.locator("#thread article.assistant.status-stopped .content").text_content().strip() == stopped_text.strip()
    )
    assert page.locator("text=Stopped.").count() == 1
    assert committed.run(tenant_a, lambda: Agent.objects.filter(slug="browser-bot").exists())


def test_on_a_phone_the_chat_fits_the_screen_and_the_conversation_list_folds_away(
    browser_page: Any, start_chat: Any, fake_llm: FakeOpenAI
) -> None:
    fake_llm.script(Reply(content="A short answer that fits."))
    problems: list[str] = []
    browser_page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    browser_page.set_viewport_size({"width": 390, "height": 844})
    no_sideways_scroll = "() => document.documentElement.scrollWidth <= window.innerWidth"

    # when: the owner logs in on a phone and starts a conversation
    page = start_chat("phone-bot", "Hello")
    page.wait_for_selector("#thread article.assistant.status-completed")

    # then: nothing is wider than the screen, and the answer and the message box are on it, not below the list
    assert page.evaluate(no_sideways_scroll)
    assert page.locator("#content").is_visible()
    assert page.locator("#content").bounding_box()["y"] < 844
    conversations = page.locator(".sidebar .conversations")
    assert not conversations.is_visible()

    # and: the message box grows with a longer message (Shift+Enter: a new line)
    box = page.locator("#content")
    height = box.bounding_box()["height"]
    box.click()
    for line in range(5):
        page.keyboard.type(f"line {line}")
        page.keyboard.press("Shift+Enter")
    assert box.bounding_box()["height"] > height + 30
    assert box.input_value().count("\n") == 5  # nothing was sent

    # when: the list is opened, the conversation is in it
    page.click(".sidebar summary")
    assert conversations.is_visible()
    assert conversations.locator("li[aria-current=page]").count() == 1

    # and: from the desk, the list is always open and its fold has no summary to click
    page.set_viewport_size({"width": 1100, "height": 800})
    assert not page.locator(".sidebar summary").is_visible()
    assert conversations.is_visible()

    # and: the home page fits a phone too
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(page.url.split("/chat/")[0] + "/")
    assert page.locator("text=Hello from phone-bot.").is_visible()
    assert page.evaluate(no_sideways_scroll)

    # and: no page asked for something the server does not have (a missing icon, a script)
    assert problems == []


def test_an_answer_being_written_is_shown_as_markdown_and_nothing_in_it_runs(
    start_chat: Any, fake_llm: FakeOpenAI
) -> None:
    markdown = (
        "Intro **bold** <b>raw</b>\n\n- one\n- two\n\n[site](https://example.com) [bad](javascript:window.pwned=1) "
        '<img src=x onerror="window.pwned=1">\n\n'
    )
    paragraphs = "\n\n".join(f"Paragraph w{i}." for i in range(60))
    fake_llm.script(Reply(content=markdown + paragraphs, token_gap_s=0.03))
    page = start_chat("markdown-bot", "Show me markdown")

    # when: the answer's list has streamed, while it is still being written
    live = "#thread article.assistant:last-child .content"
    page.wait_for_selector(f"{live} li >> text=two", timeout=30000)
    assert page.locator("#stop").is_visible()

    # then: it is drawn as markdown, by the server's rules
    assert page.locator(f"{live} strong").text_content() == "bold"
    assert page.locator(f"{live} li").count() == 2
    assert "<b>raw</b>" in page.locator(f"{live} p").first.text_content()  # raw HTML shown as text
    assert page.locator(f"{live} a[href='https://example.com']").get_attribute("rel") == "noopener noreferrer"
    assert page.locator(f"{live} a[href^='javascript']").count() == 0
    assert page.locator(f"{live} img").count() == 0

    # and: as it grows longer than the screen, the page keeps its end in view
    page.wait_for_selector(f"{live} >> text=Paragraph w50.", timeout=30000)
    assert page.evaluate("() => document.scrollingElement.scrollHeight > window.innerHeight + 200")
    assert page.evaluate(
        "() => { const p = document.scrollingElement; return p.scrollTop + innerHeight >= p.scrollHeight - 120; }"
    )

    # and: once written, the server's rendering takes its place; nothing in the answer ever ran
    page.wait_for_selector("#thread article.assistant.status-completed", timeout=30000)
    assert page.locator("#thread article.assistant.status-completed .content li").count() == 2
    assert page.evaluate("() => window.pwned") is None
