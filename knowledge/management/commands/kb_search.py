import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from knowledge.models import KnowledgeBase, SearchMode
from knowledge.services.search import knowledge_search
from nexent_site.tenancy import tenant_command_context


class Command(BaseCommand):
    help = "Search a knowledge base; print the ranked chunks as JSON (document, page, scores, text)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--kb", required=True, help="knowledge base slug")
        parser.add_argument("query")
        parser.add_argument("--top-k", type=int, default=None)
        parser.add_argument("--mode", choices=SearchMode.values, default=None)

    def handle(self, *args, **options) -> None:
        with tenant_command_context(options["tenant"]):
            kb = KnowledgeBase.objects.select_related("embedding_provider").filter(slug=options["kb"]).first()
            if kb is None:
                raise CommandError(f"No knowledge base {options['kb']!r} in tenant {options['tenant']!r}.")
            result = knowledge_search(
                knowledge_bases=[kb], query=options["query"], top_k=options["top_k"], mode=options["mode"]
            )
        payload = {
            "query": options["query"],
            "mode": result.mode,
            "warnings": result.warnings,
            "hits": [hit.as_dict() for hit in result.hits],
        }
        self.stdout.write(json.dumps(payload, ensure_ascii=False, indent=2))
