import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import User
from accounts.services import user_create
from nexent_site.errors import format_validation_error
from nexent_site.tenancy import tenant_command_context


class Command(BaseCommand):
    help = "Create a user in a tenant with a role (owner, admin or member). Non-interactive."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--email", required=True)
        parser.add_argument("--role", default=User.Role.MEMBER, choices=User.Role.values)
        parser.add_argument("--full-name", default="")
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--password", help="Prefer --password-stdin: arguments show up in ps")
        group.add_argument("--password-stdin", action="store_true", help="Read the password from stdin")

    def handle(self, *args, **options) -> None:
        password = sys.stdin.readline().rstrip("\n") if options["password_stdin"] else options["password"]
        with tenant_command_context(options["tenant"], allow_suspended=True) as tenant:
            try:
                user = user_create(
                    email=options["email"], password=password, role=options["role"], full_name=options["full_name"]
                )
            except ValidationError as exc:
                raise CommandError(format_validation_error(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Created {user.role} {user.email} in tenant {tenant.schema_name}"))
