import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from nexent_site.tenancy import tenant_command_context
from tenants.tasks import tenant_probe


class Command(BaseCommand):
    help = "Send a probe task for a tenant through a real Celery worker and print what it saw (JSON)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--timeout", type=float, default=15.0)

    def handle(self, *args, **options) -> None:
        with tenant_command_context(options["tenant"]):
            result = tenant_probe.delay()
        try:
            report = result.get(timeout=options["timeout"])
        except Exception as exc:
            raise CommandError(f"No answer from a Celery worker within {options['timeout']}s: {exc}") from exc
        self.stdout.write(json.dumps(report))
