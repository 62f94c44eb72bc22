import sys

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from nexent_site.errors import format_validation_error
from tenants.services import tenant_create


class Command(BaseCommand):
    help = "Create a tenant with its schema, domain <slug>.<NEXENT_BASE_DOMAIN> and owner. Non-interactive."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--slug", required=True, help="DNS-safe, lowercase; becomes subdomain and schema")
        parser.add_argument("--name", required=True)
        parser.add_argument("--owner-email", required=True)
        group = parser.add_mutually_exclusive_group(required=True)
        group.add_argument("--owner-password", help="Prefer --owner-password-stdin: arguments show up in ps")
        group.add_argument("--owner-password-stdin", action="store_true", help="Read the password from stdin")
        parser.add_argument("--max-users", type=int)
        parser.add_argument("--max-storage-bytes", type=int)
        parser.add_argument("--monthly-token-budget", type=int)

    def handle(self, *args, **options) -> None:
        password = sys.stdin.readline().rstrip("\n") if options["owner_password_stdin"] else options["owner_password"]
        try:
            tenant = tenant_create(
                slug=options["slug"],
                name=options["name"],
                owner_email=options["owner_email"],
                owner_password=password,
                max_users=options["max_users"],
                max_storage_bytes=options["max_storage_bytes"],
                monthly_token_budget=options["monthly_token_budget"],
            )
        except ValidationError as exc:
            raise CommandError(format_validation_error(exc)) from exc
        self.stdout.write(self.style.SUCCESS(f"Created tenant {tenant.schema_name}: {tenant.url()}"))
