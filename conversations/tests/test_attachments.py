"""Files attached to chat messages: stored, read by a real Celery worker before the agent runs, handed to
the agent as text, shown with the message, and refused (with nothing saved) when they cannot be read.
Real PostgreSQL, Redis and worker; the chat model is the local OpenAI-compatible test server."""

from __future__ import annotations

import io
import time
from typing import Any

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from conftest import Committed, host_of, owner_email
from conversations.models import Attachment, Conversation, Message
from files.models import StoredFile
from nexent_site.testing.fake_openai import FakeOpenAI, Reply

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_worker")]


@pytest.fixture
def conversation(committed: Committed, published_agent: Any, tenant_a: Any) -> Conversation:
    from accounts.models import User
    from agents.models import Agent
    from conversations.services import conversation_start

    published_agent(slug="reader", mode="chat")
    created = committed.run(
        tenant_a,
        lambda: conversation_start(
            user=User.objects.get(email=owner_email("alpha")), agent=Agent.objects.get(slug="reader")
        ),
    )

    def remove() -> None:
        from conversations.services import conversation_delete

        for found in Conversation.objects.filter(pk=created.pk):
            conversation_delete(conversation=found)

    committed.on_teardown(tenant_a, remove)
    return created


def owner_client(committed: Committed, tenant: Any) -> Client:
    client = Client()
    client.cookies["nexent_session"] = committed.session_cookie(tenant, owner_email(tenant.schema_name))
    return client


def wait_answer(committed: Committed, tenant: Any, message_id: int) -> Message:
    deadline = time.monotonic() + 60
    while True:
        message = committed.run(tenant, lambda: Message.objects.get(pk=message_id))
        if message.status not in ("pending", "streaming"):
            return message
        assert time.monotonic() < deadline, "the answer never finished"
        time.sleep(0.2)


def docx_bytes(text: str) -> bytes:
    import docx

    document = docx.Document()
    document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def test_an_attached_file_is_read_by_the_worker_and_given_to_the_agent(
    committed: Committed, conversation: Conversation, tenant_a: Any, fake_llm: FakeOpenAI
) -> None:
    # given
    fake_llm.script(Reply(content="The code is ZX-81."), Reply(content="Door codes"))
    client = owner_client(committed, tenant_a)
    host = {"HTTP_HOST": host_of(tenant_a)}
    files = [
        SimpleUploadedFile("codes.docx", docx_bytes("The door code for the lab is ZX-81.")),
        SimpleUploadedFile("broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog"),
    ]
    # when the page script posts the message with its files (on a committed connection, as a real request)
    response = committed.run(
        tenant_a,
        lambda: client.post(
            f"/chat/{conversation.pk}/send/",
            {"content": "What is the lab's door code?", "files": files},
            HTTP_ACCEPT="application/json",
            **host,
        ),
    )
    # then the answer is queued and the user's message comes back rendered with its attachments
    assert response.status_code == 200, response.content
    body = response.json()
    html = body["user_message_html"]
    assert "codes.docx" in html and "broken.pdf" in html
    # each with its state as the page renders it: still being read, or (a fast worker) already read or failed
    assert "being read" in html or "Could not be read" in html
    answer = wait_answer(committed, tenant_a, body["assistant_message_id"])
    assert answer.status == "completed", answer.error
    # the agent got the file's text with the message, and was told what could not be read
    sent = fake_llm.answer_requests()[0]["messages"][-1]["content"]
    text = sent if isinstance(sent, str) else " ".join(part.get("text", "") for part in sent)
    assert "What is the lab's door code?" in text and "ZX-81" in text
    assert "“broken.pdf” could not be read" in text
    # a later message without files: the agent still gets the earlier file's text in the history
    fake_llm.script(Reply(content="Still ZX-81."))
    later = committed.run(
        tenant_a,
        lambda: client.post(
            f"/chat/{conversation.pk}/send/", {"content": "And again?"}, HTTP_ACCEPT="application/json", **host
        ),
    )
    assert wait_answer(committed, tenant_a, later.json()["assistant_message_id"]).status == "completed"
    history = [m["content"] for m in fake_llm.answer_requests()[-1]["messages"]]
    assert any("ZX-81" in str(content) for content in history[:-1]) and history[-1] == "And again?"
    attachments = committed.run(tenant_a, lambda: {a.file.original_name: a for a in Attachment.objects.all()})
    assert attachments["codes.docx"].status == "ready"
    assert attachments["broken.pdf"].status == "failed" and attachments["broken.pdf"].error
    # the chat page shows them, with the reason of the failure and a download link
    page = client.get(f"/chat/{conversation.pk}/", **host).content.decode()
    assert "codes.docx" in page and f"/files/{attachments['codes.docx'].file_id}/download/" in page
    assert "Could not be read" in page
    # deleting the conversation deletes the files attached to it
    from conversations.services import conversation_delete

    file_ids = [a.file_id for a in attachments.values()]
    committed.run(tenant_a, lambda: conversation_delete(conversation=Conversation.objects.get(pk=conversation.pk)))
    assert not committed.run(tenant_a, lambda: StoredFile.objects.filter(pk__in=file_ids).exists())


def test_a_file_that_cannot_be_accepted_refuses_the_whole_message(
    committed: Committed, conversation: Conversation, tenant_a: Any
) -> None:
    client = owner_client(committed, tenant_a)
    response = committed.run(
        tenant_a,
        lambda: client.post(
            f"/chat/{conversation.pk}/send/",
            {"content": "see attached", "files": [SimpleUploadedFile("run.exe", b"MZ\x90\x00" + b"\x00" * 300)]},
            HTTP_ACCEPT="application/json",
            HTTP_HOST=host_of(tenant_a),
        ),
    )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_type" and "run.exe" in response.json()["error"]["message"]
    assert committed.run(tenant_a, lambda: Message.objects.filter(conversation=conversation).count()) == 0
    assert not committed.run(tenant_a, lambda: StoredFile.objects.filter(original_name="run.exe").exists())


def test_nobody_else_can_post_to_or_download_from_the_conversation(
    committed: Committed, conversation: Conversation, tenant_a: Any, tenant_b: Any, fake_llm: FakeOpenAI
) -> None:
    fake_llm.script(Reply(content="ok"), Reply(content="t"))
    owner = owner_client(committed, tenant_a)
    body = committed.run(
        tenant_a,
        lambda: owner.post(
            f"/chat/{conversation.pk}/send/",
            {"content": "", "files": [SimpleUploadedFile("note.txt", b"private note")]},
            HTTP_ACCEPT="application/json",
            HTTP_HOST=host_of(tenant_a),
        ),
    ).json()
    wait_answer(committed, tenant_a, body["assistant_message_id"])
    file_id = committed.run(tenant_a, lambda: Attachment.objects.get().file_id)
    # another member of the same tenant
    member = f"member-{time.time_ns()}@alpha.test"
    committed.user(tenant_a, email=member)
    other = Client()
    other.cookies["nexent_session"] = committed.session_cookie(tenant_a, member)
    files = {"files": [SimpleUploadedFile("x.txt", b"x")]}
    assert other.post(f"/chat/{conversation.pk}/send/", files, HTTP_HOST=host_of(tenant_a)).status_code == 404
    assert other.get(f"/files/{file_id}/download/", HTTP_HOST=host_of(tenant_a)).status_code == 404
    # the owner of another tenant
    stranger = owner_client(committed, tenant_b)
    assert stranger.get(f"/files/{file_id}/download/", HTTP_HOST=host_of(tenant_b)).status_code == 404
    assert stranger.post(f"/chat/{conversation.pk}/send/", files, HTTP_HOST=host_of(tenant_b)).status_code == 404


def test_too_many_files_refuse_the_message_with_the_limit(
    committed: Committed, conversation: Conversation, tenant_a: Any, settings: Any
) -> None:
    settings.CHAT_MAX_ATTACHMENTS = 2
    client = owner_client(committed, tenant_a)
    files = [SimpleUploadedFile(f"f{i}.txt", b"text") for i in range(3)]
    response = client.post(
        f"/chat/{conversation.pk}/send/",
        {"content": "three files", "files": files},
        HTTP_ACCEPT="application/json",
        HTTP_HOST=host_of(tenant_a),
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "too_many_attachments",
        "message": "Attach at most 2 files to one message.",
    }
    assert not Message.objects.filter(conversation_id=conversation.pk).exists()
    assert not StoredFile.objects.filter(original_name__startswith="f", original_name__endswith=".txt").exists()
