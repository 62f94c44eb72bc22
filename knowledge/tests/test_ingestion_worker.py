"""Ingestion through a real Celery worker on real PostgreSQL and Redis, with live progress over the real
Channels consumer and Redis channel layer. The embedding provider is the local OpenAI-compatible test
server (it stands in for an external model API)."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import time
import uuid
import zipfile
from typing import Any

import pytest
from channels.testing import WebsocketCommunicator

from conftest import Committed, owner_email, tenant_socket, worker_process
from knowledge.models import IN_PROGRESS, Chunk, Document, DocumentStatus
from knowledge.tests.fixtures import upload, wait_for_documents
from nexent_site.testing.fake_openai import FakeOpenAI

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("celery_worker")]


def pdf_bytes(pages: list[str]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def docx_bytes(heading: str, paragraph: str) -> bytes:
    import docx

    document = docx.Document()
    document.add_heading(heading, level=1)
    document.add_paragraph(paragraph)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


def zip_bomb_docx() -> bytes:
    """A real DOCX with one extra member that inflates 1000-fold (20 MB of zeros in ~20 kB)."""
    buffer = io.BytesIO(docx_bytes("Bomb", "Looks harmless."))
    with zipfile.ZipFile(buffer, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("word/media/padding.bin", b"\0" * (20 * 1024 * 1024))
    return buffer.getvalue()


def long_text(paragraphs: int) -> bytes:
    return "\n\n".join(
        f"Paragraph {i} describes procedure number {i} of the operations manual in enough words to fill "
        f"a chunk on its own, with steps, checks and the people responsible for each of them."
        for i in range(paragraphs)
    ).encode()


def test_every_supported_format_is_ingested_by_the_worker(committed: Committed, make_kb: Any, tenant_a: Any) -> None:
    # given
    kb = make_kb(chunk_size=80, chunk_overlap=10)
    files = {
        "guide.pdf": pdf_bytes(["Page one is about onboarding.", "Page two explains the quarzite procedure."]),
        "policy.docx": docx_bytes("Leave policy", "Annual leave is twenty-five days."),
        "notes.md": b"# Notes\n\nThe wiki moved to the new server.",
        "readme.txt": b"Plain text about the coffee machine.",
        "page.html": b"<html><body><h1>Intranet</h1><p>The canteen opens at noon.</p><script>x()</script></body>",
        "rooms.csv": b"room,floor\nAtlas,2\nBorealis,3\n",
        "config.json": b'{"service": "billing", "owner": "finance team"}',
    }
    # when
    ids = [upload(committed, tenant_a, kb, name, data).pk for name, data in files.items()]
    documents = wait_for_documents(committed, tenant_a, ids)
    # then
    assert {d.title: (d.status, d.error) for d in documents} == {
        name.rsplit(".", 1)[0]: (DocumentStatus.READY, "") for name in files
    }
    by_title = {d.title: d for d in documents}
    assert by_title["guide"].pages == 2
    chunks = committed.run(tenant_a, lambda: list(Chunk.objects.filter(document__in=ids, live=True)))
    pdf_page = next(c.page for c in chunks if "quarzite" in c.text)
    assert pdf_page == 2
    assert not any("x()" in c.text for c in chunks)  # scripts are not text
    assert any("Borealis" in c.text for c in chunks) and any("finance team" in c.text for c in chunks)


def test_bad_files_fail_with_reasons_while_the_others_continue(
    committed: Committed, make_kb: Any, tenant_a: Any
) -> None:
    from pypdf import PdfReader, PdfWriter

    kb = make_kb()
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf_bytes(["secret plans"]))))
    writer.encrypt("hunter2")
    encrypted = io.BytesIO()
    writer.write(encrypted)
    files = {
        "bomb.docx": zip_bomb_docx(),
        "locked.pdf": encrypted.getvalue(),
        "truncated.pdf": pdf_bytes(["fine"])[:300],
        "good.txt": b"This one is fine and should be searchable.",
    }
    ids = [upload(committed, tenant_a, kb, name, data).pk for name, data in files.items()]
    documents = {d.title: d for d in wait_for_documents(committed, tenant_a, ids)}
    assert documents["good"].status == DocumentStatus.READY
    for title in ("bomb", "locked", "truncated"):
        assert documents[title].status == DocumentStatus.FAILED, title
        assert documents[title].error
    assert "compress" in documents["bomb"].error.lower() or "zip" in documents["bomb"].error.lower()
    assert "password" in documents["locked"].error.lower()


def test_cancel_really_stops_a_running_ingestion(
    committed: Committed, make_kb: Any, tenant_a: Any, fake_llm: FakeOpenAI
) -> None:
    from knowledge.services.documents import document_cancel

    kb = make_kb(chunk_size=60, chunk_overlap=0)
    fake_llm.embedding_delay_s = 0.3  # slow enough to catch it mid-way
    document = upload(committed, tenant_a, kb, "manual.txt", long_text(120))
    wait_for_documents(committed, tenant_a, [document.pk], until=lambda ds: ds[0].status == DocumentStatus.EMBEDDING)
    # when
    committed.run(tenant_a, lambda: document_cancel(document=Document.objects.get(pk=document.pk)))
    requests_at_cancel = len(fake_llm.embedding_requests)
    time.sleep(1.5)
    # then: the worker stopped (at most the batch in flight finished) and left nothing behind
    assert len(fake_llm.embedding_requests) <= requests_at_cancel + 1
    after = committed.run(tenant_a, lambda: Document.objects.get(pk=document.pk))
    assert after.status == DocumentStatus.CANCELLED
    assert committed.run(tenant_a, lambda: Chunk.objects.filter(document_id=document.pk).count()) == 0


def test_a_worker_killed_mid_ingestion_is_resumed_with_exactly_one_set_of_chunks(
    committed: Committed, make_kb: Any, tenant_a: Any, fake_llm: FakeOpenAI, settings: Any
) -> None:
    """SIGKILL the worker while it embeds; the watchdog re-queues the stalled document once the worker's
    lock has expired, and a new worker resumes from its checkpoint."""
    from knowledge.services.ingestion import documents_watchdog
    from nexent_site.celery import app

    kb = make_kb(chunk_size=60, chunk_overlap=0)
    queue = f"nexent-kill-{uuid.uuid4().hex[:6]}"
    worker_env = {"KNOWLEDGE_LOCK_TTL_S": "2", "KNOWLEDGE_EMBED_BATCH": "4"}
    default_queue = app.conf.task_default_queue
    app.conf.task_default_queue = queue
    try:
        fake_llm.embedding_delay_s = 0.2
        with worker_process(queue, **worker_env) as first:
            document = upload(committed, tenant_a, kb, "manual.txt", long_text(60))

            def embedded() -> int:
                return Chunk.objects.filter(document_id=document.pk, embedding__isnull=False).count()

            deadline = time.monotonic() + 60
            while committed.run(tenant_a, embedded) < 8:
                assert time.monotonic() < deadline, "the first worker never got to embedding"
                time.sleep(0.1)
            os.killpg(first["process"].pid, signal.SIGKILL)
            first["process"].wait()
        stalled = committed.run(tenant_a, lambda: Document.objects.get(pk=document.pk))
        assert stalled.status in IN_PROGRESS and stalled.checkpoint == "chunked"
        partially = committed.run(tenant_a, embedded)
        assert 0 < partially < stalled.chunk_count
        fake_llm.embedding_delay_s = 0
        fake_llm.embedding_requests.clear()
        time.sleep(2.5)  # the dead worker's lock expires
        settings.KNOWLEDGE_STALE_AFTER_S = 0
        assert committed.run(tenant_a, documents_watchdog)["requeued"] == 1
        with worker_process(queue, **worker_env):
            (done,) = wait_for_documents(committed, tenant_a, [document.pk])
    finally:
        app.conf.task_default_queue = default_queue
    assert done.status == DocumentStatus.READY, done.error
    assert done.attempts == 2
    chunks = committed.run(tenant_a, lambda: list(Chunk.objects.filter(document_id=document.pk)))
    positions = sorted(c.position for c in chunks)
    assert positions == list(range(done.chunk_count)) == list(range(stalled.chunk_count))
    assert all(c.live and c.embedding is not None for c in chunks)
    # resumed: only the chunks without an embedding were sent again
    assert sum(len(batch) for batch in fake_llm.embedding_requests) <= stalled.chunk_count - partially + 4


def progress_socket(tenant: Any, kb_id: Any, cookie: str | None) -> WebsocketCommunicator:
    return tenant_socket(tenant, f"/ws/knowledge/{kb_id}/", cookie)


async def test_progress_streams_live_to_staff_over_the_websocket(
    committed: Committed, make_kb: Any, tenant_a: Any, fake_llm: FakeOpenAI
) -> None:
    kb = await asyncio.to_thread(make_kb, chunk_size=60, chunk_overlap=0)
    cookie = await asyncio.to_thread(committed.session_cookie, tenant_a, owner_email("alpha"))
    fake_llm.embedding_delay_s = 0.05
    socket = progress_socket(tenant_a, kb.pk, cookie)
    connected, _ = await socket.connect()
    assert connected
    try:
        snapshot = await socket.receive_json_from(timeout=5)
        assert snapshot == {"type": "snapshot", "documents": []}
        document = await asyncio.to_thread(upload, committed, tenant_a, kb, "manual.txt", long_text(40))
        seen = []
        while not seen or seen[-1]["status"] != "ready":
            frame = await socket.receive_json_from(timeout=30)
            assert frame["type"] == "document" and frame["document"]["id"] == document.pk
            seen.append(frame["document"])
        statuses = [s["status"] for s in seen]
        for stage in ("queued", "extracting", "chunking", "embedding", "indexing", "ready"):
            assert stage in statuses
        progress = [s["progress"] for s in seen]
        assert progress == sorted(progress) and progress[-1] == 100
        assert len({p for p, s in zip(progress, statuses, strict=True) if s == "embedding"}) > 1
    finally:
        await socket.disconnect()


async def test_progress_sockets_refuse_members_strangers_and_other_tenants(
    committed: Committed, make_kb: Any, tenant_a: Any, tenant_b: Any
) -> None:
    kb = await asyncio.to_thread(make_kb)
    member = f"member-{uuid.uuid4().hex[:6]}@alpha.test"
    await asyncio.to_thread(committed.user, tenant_a, email=member)
    member_cookie = await asyncio.to_thread(committed.session_cookie, tenant_a, member)
    owner_b = await asyncio.to_thread(committed.session_cookie, tenant_b, owner_email("beta"))
    attempts = [
        (tenant_a, None),  # anonymous
        (tenant_a, member_cookie),  # not staff
        (tenant_b, owner_b),  # B's staff asking for A's knowledge base id
    ]
    for tenant, cookie in attempts:
        socket = progress_socket(tenant, kb.pk, cookie)
        connected, code = await socket.connect()
        assert not connected and code == 4403
        await socket.disconnect()


def test_kb_commands_ingest_through_the_worker_and_search(
    committed: Committed, make_kb: Any, tenant_a: Any, tmp_path: Any
) -> None:
    import json

    from django.core.management import CommandError, call_command

    make_kb(slug="cli")
    good = tmp_path / "faq.md"
    good.write_text("# FAQ\n\nThe VPN password resets every ninety days.")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    out, err = io.StringIO(), io.StringIO()
    # (run on a committed connection, so the worker sees the uploads)
    with pytest.raises(CommandError, match="1 of 2"):
        committed.run(
            tenant_a,
            lambda: call_command(
                "kb_ingest", "--tenant", "alpha", "--kb", "cli", str(good), str(empty), stdout=out, stderr=err
            ),
        )
    assert "faq: ready" in out.getvalue()
    assert "empty.txt" in err.getvalue() and "empty" in err.getvalue()
    out = io.StringIO()
    call_command("kb_search", "--tenant", "alpha", "--kb", "cli", "VPN password", stdout=out)
    payload = json.loads(out.getvalue())
    assert payload["hits"][0]["document_title"] == "faq"
    assert {"score", "keyword_score", "vector_score", "page", "text", "chunk_id"} <= set(payload["hits"][0])
    with pytest.raises(CommandError, match="No knowledge base"):
        call_command("kb_search", "--tenant", "beta", "--kb", "cli", "VPN", stdout=io.StringIO())
