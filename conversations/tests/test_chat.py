"""The chat flow end to end: the real ASGI application and Redis channel layer (WebsocketCommunicator),
a real Celery worker, real PostgreSQL; the model provider is the local OpenAI-compatible test server."""

import asyncio
import time
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from agents.models import Agent
from conftest import Committed, owner_email, tenant_socket
from conversations.models import Conversation, Message
from conversations.services import conversation_start
from nexent_site.testing.fake_openai import FakeOpenAI, Reply, ToolCallSpec
from tenants.models import Tenant

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_worker")]


def socket(tenant: Tenant, conversation_id: Any, cookie: str | None) -> WebsocketCommunicator:
    return tenant_socket(tenant, f"/ws/chat/{conversation_id}/", cookie)


async def frames_until(communicator: WebsocketCommunicator, kind: str, timeout: float = 30) -> list[dict]:
    frames = []
    while True:
        frame = await communicator.receive_json_from(timeout=timeout)
        frames.append(frame)
        if frame["type"] == kind:
            return frames


@pytest.fixture
def chat(committed: Committed, published_agent: Any, tenant_a: Tenant) -> Any:
    """A published agent, a conversation of A's owner with it, and the owner's session cookie."""

    def make(slug: str = "chatty", **fields: Any) -> tuple[Conversation, str]:
        published_agent(slug=slug, **fields)
        from accounts.models import User

        conversation = committed.run(
            tenant_a,
            lambda: conversation_start(
                user=User.objects.get(email=owner_email("alpha")), agent=Agent.objects.get(slug=slug)
            ),
        )
        committed.on_teardown(tenant_a, lambda: Conversation.objects.filter(pk=conversation.pk).delete())
        return conversation, committed.session_cookie(tenant_a, owner_email("alpha"))

    return make


def stored_messages(committed: Committed, tenant: Tenant, conversation: Conversation) -> list[Message]:
    return committed.run(
        tenant, lambda: list(Message.objects.filter(conversation=conversation).prefetch_related("units").order_by("id"))
    )


async def test_a_message_streams_and_is_stored_with_its_units(
    chat: Any, committed: Committed, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    # given
    conversation, cookie = await asyncio.to_thread(chat, "chatty", tools=("calculator",))
    fake_llm.script(
        Reply(content="Computing.", tool_calls=[ToolCallSpec("calculator", {"expression": "2+3"})]),
        Reply(tool_calls=[ToolCallSpec("final_answer", {"answer": "**5**"})]),
        Reply(content="Adding numbers", title=True),
    )
    communicator = socket(tenant_a, conversation.pk, cookie)
    assert (await communicator.connect())[0]

    # when
    await communicator.send_json_to({"type": "send", "content": "what is 2+3?"})
    frames = await frames_until(communicator, "title")
    await communicator.disconnect()

    # then: the events arrive in order, then the stored message, then the title
    assert frames[0]["type"] == "message_created" and frames[0]["user_message"]["content"] == "what is 2+3?"
    events = [f for f in frames if "seq" in f]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "run_finished"
    done = next(f for f in frames if f["type"] == "message_done")
    assert done["status"] == "completed" and "<strong>5</strong>" in done["html"]
    assert frames[-1] == {"type": "title", "title": "Adding numbers"}

    user_message, answer = await asyncio.to_thread(stored_messages, committed, tenant_a, conversation)
    assert (user_message.role, user_message.content) == ("user", "what is 2+3?")
    assert (answer.role, answer.status, answer.content) == ("assistant", "completed", "**5**")
    kinds = [unit.kind for unit in answer.units.all()]
    assert kinds[:3] == ["step", "tool_call", "tool_result"] and kinds[-1] == "final_answer"
    assert answer.tokens_in > 0


async def test_a_page_that_sees_the_runs_end_finds_the_message_final(
    chat: Any, committed: Committed, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    """The message is written in the transaction that stores the run's end, before `run_finished` goes out: a page
    reloaded at that moment shows the final answer, never one still "streaming" whose run has ended. Shown with
    PostgreSQL's own row lock: while another connection holds the message's row, `run_finished` does not go out;
    once it lets go, the run ends with the message written."""
    import psycopg

    from conftest import _database_url

    conversation, cookie = await asyncio.to_thread(chat, "closer", mode="chat")
    fake_llm.script(Reply(content="one two three four five six seven eight", token_gap_s=0.15))
    communicator = socket(tenant_a, conversation.pk, cookie)
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "send", "content": "hello"})
    await frames_until(communicator, "text_delta")

    def message_status() -> str:
        return stored_messages(committed, tenant_a, conversation)[-1].status

    for _ in range(50):  # marked "streaming" just after the first words went out
        if await asyncio.to_thread(message_status) == "streaming":
            break
        await asyncio.sleep(0.05)
    holder = await asyncio.to_thread(psycopg.connect, _database_url())
    try:
        await asyncio.to_thread(
            holder.execute,
            f'SELECT 1 FROM "{tenant_a.schema_name}".conversations_message WHERE conversation_id = %s FOR UPDATE',
            [conversation.pk],
        )
        frames = []
        until = time.monotonic() + 3  # the answer is over in about a second; its end waits
        while time.monotonic() < until:
            if not await communicator.receive_nothing(timeout=0.1):
                frames.append(await communicator.receive_json_from())
        held_until_now = [f["type"] for f in frames]
        await asyncio.to_thread(holder.rollback)
        frames += await frames_until(communicator, "run_finished")
    finally:
        await asyncio.to_thread(holder.close)
    _, answer = await asyncio.to_thread(stored_messages, committed, tenant_a, conversation)
    await communicator.disconnect()

    assert "text_delta" in held_until_now and "run_finished" not in held_until_now
    assert frames[-1]["type"] == "run_finished"
    assert (answer.status, answer.content) == ("completed", "one two three four five six seven eight")
    assert [unit.kind for unit in answer.units.all()] == ["step", "final_answer"]


async def test_a_page_stops_listening_to_a_run_once_it_has_relayed_its_end(
    chat: Any, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    """A chat page may stay open for hundreds of turns: after a run's last event it unsubscribes from the run's
    group (Redis PUBSUB NUMSUB counts the subscribers), and keeps listening to its conversation's notices."""
    from agents.runtime.streams import group_message, redis_client, run_group_name
    from conversations.services import conversation_group_name

    conversation, cookie = await asyncio.to_thread(chat, "listener", mode="chat")
    fake_llm.script(Reply(content="one two three four five six", token_gap_s=0.2), Reply(content="Heard", title=True))
    communicator = socket(tenant_a, conversation.pk, cookie)
    assert (await communicator.connect())[0]

    def subscribers(group: str) -> int:
        ((_, count),) = redis_client().pubsub_numsub(group_message(group, {})[0])
        return count

    await communicator.send_json_to({"type": "send", "content": "hello"})
    run_id = (await frames_until(communicator, "message_created"))[-1]["run_id"]
    run_group = run_group_name(tenant_a.schema_name, run_id)
    await communicator.receive_json_from(timeout=20)  # the run's first event: the page is in the run's group
    during = await asyncio.to_thread(subscribers, run_group)
    frames = await frames_until(communicator, "message_done")
    for _ in range(20):  # the unsubscription went out before message_done was relayed; Redis may lag a moment
        if await asyncio.to_thread(subscribers, run_group) == 0:
            break
        await asyncio.sleep(0.1)
    remaining = await asyncio.to_thread(subscribers, run_group)
    conversation_group = conversation_group_name(tenant_a.schema_name, str(conversation.pk))
    listening = await asyncio.to_thread(subscribers, conversation_group)
    await communicator.disconnect()

    assert [f["type"] for f in frames if "seq" in f][-1] == "run_finished"
    assert during == 1 and remaining == 0 and listening == 1


@pytest.mark.parametrize(
    ("cookies", "language", "expected", "absent"),
    [
        ("", "zh-CN,zh;q=0.9", "复制", "Copy"),  # Accept-Language
        ("django_language=zh-hans", "en", "复制", "Copy"),  # the language switcher's choice wins
        ("", "", "Copy", "复制"),  # neither: LANGUAGE_CODE
    ],
)
async def test_the_finished_answer_comes_back_in_the_pages_language(
    chat: Any, fake_llm: FakeOpenAI, tenant_a: Tenant, cookies: str, language: str, expected: str, absent: str
) -> None:
    # given: a page in some language follows a turn
    conversation, cookie = await asyncio.to_thread(chat, "polyglot", mode="chat")
    fake_llm.script(Reply(content="Bonjour."), Reply(content="Greeting", title=True))
    communicator = tenant_socket(tenant_a, f"/ws/chat/{conversation.pk}/", cookie, cookies=cookies, language=language)
    assert (await communicator.connect())[0]

    # when
    await communicator.send_json_to({"type": "send", "content": "hello"})
    done = (await frames_until(communicator, "message_done"))[-1]
    await communicator.disconnect()

    # then: the stored answer's HTML (its buttons) is in that language
    assert "Bonjour." in done["html"]
    assert expected in done["html"] and absent not in done["html"]


async def test_an_answer_is_pending_until_its_first_words_then_streaming(
    chat: Any, committed: Committed, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    """The message says "streaming" once the answer's first words are out (marked after they are published,
    off the path to the first token), "pending" while the model has yet to answer."""
    conversation, cookie = await asyncio.to_thread(chat, "marker", mode="chat")
    fake_llm.script(Reply(content=" ".join(f"w{i}" for i in range(20)), delay_s=1.0, token_gap_s=0.1))
    communicator = socket(tenant_a, conversation.pk, cookie)
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "send", "content": "take your time"})
    while (await communicator.receive_json_from(timeout=20))["type"] != "step_started":
        pass  # the run started and the model was asked: it answers after a second
    while_thinking = (await asyncio.to_thread(stored_messages, committed, tenant_a, conversation))[-1].status
    while (await communicator.receive_json_from(timeout=20))["type"] != "text_delta":
        pass
    await asyncio.sleep(0.3)  # the words are out; the update follows them
    while_writing = (await asyncio.to_thread(stored_messages, committed, tenant_a, conversation))[-1].status
    frames = await frames_until(communicator, "message_done")
    await communicator.disconnect()

    assert (while_thinking, while_writing, frames[-1]["status"]) == ("pending", "streaming", "completed")


async def test_stop_saves_the_partial_answer_as_stopped(
    chat: Any, committed: Committed, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    conversation, cookie = await asyncio.to_thread(chat, "stopper", mode="chat")
    fake_llm.script(Reply(content=" ".join(f"part{i}" for i in range(60)), token_gap_s=0.05))
    communicator = socket(tenant_a, conversation.pk, cookie)
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "send", "content": "tell me a long story"})
    deltas = 0
    while deltas < 3:
        deltas += (await communicator.receive_json_from(timeout=20))["type"] == "text_delta"
    await communicator.send_json_to({"type": "stop"})
    frames = await frames_until(communicator, "message_done")
    await communicator.disconnect()

    assert frames[-1]["status"] == "stopped"
    answer = (await asyncio.to_thread(stored_messages, committed, tenant_a, conversation))[-1]
    assert answer.status == "stopped" and answer.content.startswith("part0 part1") and "part59" not in answer.content


async def test_a_turn_whose_provider_is_busy_waits_its_turn_and_is_answered(
    chat: Any, committed: Committed, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    """The agent's provider takes one answer at a time; two conversations ask at once. The second turn stays
    pending (its task tried again, not waiting in a worker) until the first answer is done, then streams."""
    first, cookie = await asyncio.to_thread(chat, "one-at-a-time", mode="chat", provider={"max_concurrency": 1})
    second = await asyncio.to_thread(
        committed.run,
        tenant_a,
        lambda: conversation_start(user=first.user, agent=Agent.objects.get(slug="one-at-a-time")),
    )
    fake_llm.script(*[Reply(content=" ".join(["word"] * 10), token_gap_s=0.05) for _ in range(2)])
    sockets = [socket(tenant_a, conversation.pk, cookie) for conversation in (first, second)]
    for communicator in sockets:
        assert (await communicator.connect())[0]
    for communicator in sockets:
        await communicator.send_json_to({"type": "send", "content": "go"})

    frames = await asyncio.gather(*(frames_until(communicator, "message_done") for communicator in sockets))
    for communicator in sockets:
        await communicator.disconnect()

    assert [f[-1]["status"] for f in frames] == ["completed", "completed"]
    spans = sorted(
        (deltas[0], deltas[-1]) for deltas in ([x["ts"] for x in f if x["type"] == "text_delta"] for f in frames)
    )
    assert spans[0][1] <= spans[1][0]  # one after the other
    answers = [(await asyncio.to_thread(stored_messages, committed, tenant_a, c))[-1] for c in (first, second)]
    assert [(a.status, a.content) for a in answers] == [("completed", " ".join(["word"] * 10))] * 2


async def test_stop_before_any_worker_took_the_turn_shows_the_answer_stopped_at_once(
    chat: Any, committed: Committed, tenant_a: Tenant, own_queue: str
) -> None:
    """The turn waits in a queue no worker consumes (all workers busy, or down): the page's stop writes the
    answer at once and the page gets it, and the conversation takes the next message."""
    conversation, cookie = await asyncio.to_thread(chat, "unserved", mode="chat")
    communicator = socket(tenant_a, conversation.pk, cookie)
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "send", "content": "anyone there?"})
    created = (await frames_until(communicator, "message_created"))[-1]
    await communicator.send_json_to({"type": "stop"})
    frames = await frames_until(communicator, "message_done", timeout=10)
    await communicator.send_json_to({"type": "send", "content": "and now?"})
    again = (await frames_until(communicator, "message_created", timeout=10))[-1]
    await communicator.disconnect()

    done = frames[-1]
    assert (done["message_id"], done["status"]) == (created["assistant_message_id"], "stopped")
    assert "status-stopped" in done["html"] and "Stopped." in done["html"]
    assert any(f["type"] == "run_finished" and f["data"]["status"] == "cancelled" for f in frames)
    assert again["assistant_message_id"] != created["assistant_message_id"]
    stored = await asyncio.to_thread(stored_messages, committed, tenant_a, conversation)
    assert [(m.role, m.status) for m in stored][:2] == [("user", "completed"), ("assistant", "stopped")]


async def test_a_reconnect_resumes_without_gaps_or_duplicates(
    chat: Any, committed: Committed, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    conversation, cookie = await asyncio.to_thread(chat, "resumer", mode="chat")
    fake_llm.script(Reply(content=" ".join(f"t{i}" for i in range(25)), token_gap_s=0.04))

    first = socket(tenant_a, conversation.pk, cookie)
    assert (await first.connect())[0]
    await first.send_json_to({"type": "send", "content": "count"})
    created = await first.receive_json_from(timeout=20)
    seen = [await first.receive_json_from(timeout=20) for _ in range(6)]
    await first.disconnect()

    second = socket(tenant_a, conversation.pk, cookie)
    assert (await second.connect())[0]
    await second.send_json_to({"type": "resume", "run_id": created["run_id"], "after": seen[-1]["seq"]})
    rest = [f for f in await frames_until(second, "run_finished") if "seq" in f]
    await second.disconnect()

    seqs = [e["seq"] for e in seen + rest]
    assert seqs == list(range(1, len(seqs) + 1))
    text = "".join(e["data"]["text"] for e in seen + rest if e["type"] == "text_delta")
    assert text == " ".join(f"t{i}" for i in range(25))


async def test_a_page_that_joins_after_the_answer_ended_gets_the_stored_answer_once(
    chat: Any, committed: Committed, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    """A page loaded (or reconnected) just as the answer ended: the answer's `message_done` went to the pages open
    then. Its resume replays the run to `run_finished`, then gives it the stored answer, and only once."""
    conversation, cookie = await asyncio.to_thread(chat, "late-page", mode="chat")
    fake_llm.script(Reply(content="Finished before you looked."))
    # titled already: no `title` frame (sent when a first answer's title is made) reaches the page meanwhile
    await asyncio.to_thread(
        committed.run, tenant_a, lambda: Conversation.objects.filter(pk=conversation.pk).update(title="Late page")
    )

    # given: a turn answered while no page of it was open
    sender = socket(tenant_a, conversation.pk, cookie)
    assert (await sender.connect())[0]
    await sender.send_json_to({"type": "send", "content": "quick one"})
    created = await sender.receive_json_from(timeout=20)
    await sender.disconnect()

    def answered() -> bool:
        return Message.objects.get(pk=created["assistant_message_id"]).status == Message.Status.COMPLETED

    deadline = time.monotonic() + 30
    while not await asyncio.to_thread(committed.run, tenant_a, answered):
        assert time.monotonic() < deadline, "the turn was not answered"
        await asyncio.sleep(0.05)

    # when: a page that still shows it as being written follows the run
    page = socket(tenant_a, conversation.pk, cookie)
    assert (await page.connect())[0]
    await page.send_json_to({"type": "resume", "run_id": created["run_id"], "after": 0})
    frames = await frames_until(page, "message_done")

    # then: every event of the run, then the stored answer, rendered
    assert [f["seq"] for f in frames if "seq" in f] == list(range(1, len(frames)))
    assert frames[-2]["type"] == "run_finished"
    done = frames[-1]
    assert (done["message_id"], done["status"], done["run_id"]) == (
        created["assistant_message_id"],
        "completed",
        created["run_id"],
    )
    assert "status-completed" in done["html"] and "Finished before you looked." in done["html"]

    # and: asked again, it is not sent twice
    await page.send_json_to({"type": "resume", "run_id": created["run_id"], "after": 0})
    assert await page.receive_nothing(timeout=0.5)
    await page.disconnect()


async def test_bad_input_gets_clear_errors_and_changes_nothing(
    chat: Any, committed: Committed, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    conversation, cookie = await asyncio.to_thread(chat, "strict", mode="chat")
    communicator = socket(tenant_a, conversation.pk, cookie)
    assert (await communicator.connect())[0]

    async def error_for(frame: Any, raw: str | None = None) -> dict:
        if raw is not None:
            await communicator.send_to(text_data=raw)
        else:
            await communicator.send_json_to(frame)
        reply = await communicator.receive_json_from(timeout=10)
        assert reply["type"] == "error"
        return reply

    assert (await error_for(None, raw="{oops"))["code"] == "bad_frame"
    assert (await error_for({"type": "send"}))["code"] == "bad_frame"
    assert (await error_for({"type": "send", "content": "   "}))["code"] == "empty_message"
    assert (await error_for({"type": "send", "content": "x" * 20_001}))["code"] == "message_too_long"
    assert (await error_for({"type": "resume", "run_id": "00000000-0000-0000-0000-000000000000"}))[
        "code"
    ] == "not_found"
    assert (await error_for({"type": "regenerate", "message_id": 999999}))["code"] == "not_found"
    assert (await error_for({"type": "stop"}))["code"] == "nothing_to_stop"

    await asyncio.to_thread(
        committed.run, tenant_a, lambda: Conversation.objects.filter(pk=conversation.pk).update(archived=True)
    )
    assert (await error_for({"type": "send", "content": "hello"}))["code"] == "archived"
    await communicator.disconnect()
    assert await asyncio.to_thread(stored_messages, committed, tenant_a, conversation) == []


async def test_a_model_error_mid_stream_leaves_no_message_streaming(
    chat: Any, committed: Committed, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    conversation, cookie = await asyncio.to_thread(chat, "flaky", mode="chat")
    fake_llm.script(Reply(content="one two three four five", fail_after_chunks=3))
    communicator = socket(tenant_a, conversation.pk, cookie)
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "send", "content": "go"})
    frames = await frames_until(communicator, "message_done")
    await communicator.disconnect()

    assert frames[-1]["status"] == "failed"
    answer = (await asyncio.to_thread(stored_messages, committed, tenant_a, conversation))[-1]
    assert answer.status == "failed" and "broke before the answer was finished" in answer.error


async def test_an_error_the_model_reports_mid_stream_fails_the_answer_with_its_reason(
    chat: Any, committed: Committed, fake_llm: FakeOpenAI, tenant_a: Tenant
) -> None:
    conversation, cookie = await asyncio.to_thread(chat, "overloaded", mode="chat")
    fake_llm.script(Reply(content="one two three four five", error_after_chunks=3, error_message="Overloaded, sorry"))
    communicator = socket(tenant_a, conversation.pk, cookie)
    assert (await communicator.connect())[0]
    await communicator.send_json_to({"type": "send", "content": "go"})
    frames = await frames_until(communicator, "message_done")
    await communicator.disconnect()

    # the words before the error were streamed; the answer is failed with the provider's words, kept
    assert "one two" in "".join(f["data"]["text"] for f in frames if f["type"] == "text_delta")
    assert frames[-1]["status"] == "failed"
    answer = (await asyncio.to_thread(stored_messages, committed, tenant_a, conversation))[-1]
    assert answer.status == "failed" and "Overloaded, sorry" in answer.error
    assert answer.content.startswith("one two")


@pytest.mark.parametrize("who", ["anonymous", "another-user", "other-tenant-cookie", "malformed-id"])
async def test_chat_sockets_are_refused_to_anyone_else(
    chat: Any, committed: Committed, tenant_a: Tenant, tenant_b: Tenant, who: str
) -> None:
    conversation, cookie = await asyncio.to_thread(chat, "private-chat", mode="chat")
    tenant, target = tenant_a, conversation.pk
    if who == "anonymous":
        cookie = None
    elif who == "another-user":
        await asyncio.to_thread(committed.user, tenant_a, email="other@alpha.test")
        cookie = await asyncio.to_thread(committed.session_cookie, tenant_a, "other@alpha.test")
    elif who == "other-tenant-cookie":
        tenant = tenant_b  # A's session cookie sent to B's domain: nobody there
    elif who == "malformed-id":
        target = "not-a-uuid"
    communicator = socket(tenant, target, cookie)
    connected, code = await communicator.connect()
    assert not connected
    assert code == (4401 if who in ("anonymous", "other-tenant-cookie") else 4404)
    await communicator.disconnect()
