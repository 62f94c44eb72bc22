import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from agents.models import Agent, AgentRun, RunStatus
from agents.runtime.streams import run_events_follow
from agents.services.runs import run_start
from nexent_site.errors import ApplicationError, format_validation_error
from nexent_site.tenancy import tenant_command_context


class Command(BaseCommand):
    help = "Run a published agent through a real worker; print its events as JSON lines. Exit 1 unless it succeeds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--agent", required=True, help="agent slug")
        parser.add_argument("message", help="the user's message")
        parser.add_argument("--draft", action="store_true", help="run the draft instead of the published version")
        parser.add_argument("--timeout", type=float, default=600, help="seconds to wait for the run to finish")

    def handle(self, *args, **options) -> None:
        with tenant_command_context(options["tenant"]):
            agent = Agent.objects.filter(slug=options["agent"]).first()
            if agent is None:
                raise CommandError(f"No agent {options['agent']!r} in tenant {options['tenant']!r}.")
            try:
                run = run_start(
                    agent=agent, messages=options["message"], trigger=AgentRun.Trigger.CLI, draft=options["draft"]
                )
            except ValidationError as exc:
                raise CommandError(format_validation_error(exc)) from exc
            except ApplicationError as exc:
                raise CommandError(exc.message) from exc
            try:
                for event in run_events_follow(connection.schema_name, str(run.id), timeout_s=options["timeout"]):
                    self.stdout.write(json.dumps(event, ensure_ascii=False))
            except TimeoutError as exc:
                raise CommandError(f"{exc}; is a Celery worker running?") from exc
            run.refresh_from_db()
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(f"run {run.id} {run.status}: {run.error}")
