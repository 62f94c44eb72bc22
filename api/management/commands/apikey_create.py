from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from accounts.models import User
from api.scopes import Scope
from api.services import apikey_create
from nexent_site.errors import format_validation_error
from nexent_site.tenancy import tenant_command_context


class Command(BaseCommand):
    help = "Create an API key for a tenant and print it (only the key: it is stored hashed and not shown again)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", required=True, help="tenant slug")
        parser.add_argument("--scopes", required=True, help=f"comma-separated: {', '.join(Scope.values)}")
        parser.add_argument("--name", default="", help="what the key is for (default: made up from the scopes)")
        parser.add_argument("--user", default="", help="email of the user the key acts as (default: the first owner)")
        parser.add_argument("--expires-in-days", type=int, default=0, help="0: never expires")

    def handle(self, *args, **options) -> None:
        with tenant_command_context(options["tenant"]):
            users = User.objects.filter(is_active=True)
            if options["user"]:
                user = users.filter(email__iexact=options["user"]).first()
            else:
                user = users.filter(role=User.Role.OWNER).order_by("date_joined", "pk").first()
            if user is None:
                raise CommandError(
                    f"No active user {options['user'] or 'with the owner role'} in {options['tenant']!r}."
                )
            days = options["expires_in_days"]
            try:
                _, raw = apikey_create(
                    user=user,
                    name=options["name"] or f"{options['scopes']} (command line)",
                    scopes=options["scopes"],
                    expires_at=timezone.now() + timedelta(days=days) if days > 0 else None,
                )
            except ValidationError as exc:
                raise CommandError(format_validation_error(exc)) from exc
        self.stdout.write(raw)
