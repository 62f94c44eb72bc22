import time
from pathlib import Path

from django.core.files import File
from django.core.management.base import BaseCommand, CommandError, CommandParser

from knowledge.models import IN_PROGRESS, Document, DocumentStatus, KnowledgeBase
from knowledge.services.documents import document_upload
from nexent_site.errors import ApplicationError
from nexent_site.tenancy import tenant_command_context


class Command(BaseCommand):
    help = (
        "Ingest files into a knowledge base through the real pipeline (a Celery worker must run) and wait, "
        "printing progress. Exit 1 if any file is refused or fails."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--kb", required=True, help="knowledge base slug")
        parser.add_argument("files", nargs="+", help="files to ingest")
        parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for all documents")

    def handle(self, *args, **options) -> None:
        with tenant_command_context(options["tenant"]):
            kb = KnowledgeBase.objects.filter(slug=options["kb"]).first()
            if kb is None:
                raise CommandError(f"No knowledge base {options['kb']!r} in tenant {options['tenant']!r}.")
            documents, problems = [], []
            for name in options["files"]:
                path = Path(name)
                if not path.is_file():
                    problems.append(f"{name}: no such file")
                    continue
                try:
                    with path.open("rb") as handle:
                        documents.append(document_upload(knowledge_base=kb, upload=File(handle, name=path.name)))
                except ApplicationError as exc:
                    problems.append(f"{name}: {exc.message}")
            for problem in problems:
                self.stderr.write(f"refused {problem}")
            problems += self._wait(documents, options["timeout"])
        if problems:
            raise CommandError(f"{len(problems)} of {len(options['files'])} file(s) not ingested")

    def _wait(self, documents: list[Document], timeout: float) -> list[str]:
        deadline, shown, failures = time.monotonic() + timeout, {}, []
        pending = {d.pk for d in documents}
        while pending:
            if time.monotonic() > deadline:
                raise CommandError(
                    f"timed out with {len(pending)} document(s) in progress; is a Celery worker running?"
                )
            for document in Document.objects.filter(pk__in=pending):
                state = (document.status, document.progress)
                if shown.get(document.pk) != state:
                    shown[document.pk] = state
                    self.stdout.write(f"{document.title}: {document.get_status_display().lower()} {document.progress}%")
                if document.status not in IN_PROGRESS:
                    pending.discard(document.pk)
                    if document.status == DocumentStatus.READY:
                        self.stdout.write(f"{document.title}: ready, {document.chunk_count} chunks")
                    else:
                        failures.append(f"{document.title}: {document.status} {document.error}")
                        self.stderr.write(f"{document.title}: {document.status}: {document.error}")
            time.sleep(0.3)
        return failures
