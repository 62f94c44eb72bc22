from django.conf import settings
from django.core.management.base import BaseCommand

from tenants.bootstrap import credentials_path, platform_bootstrap


class Command(BaseCommand):
    help = "Idempotently create the platform row, a platform superuser and the demo tenant; print how to log in."

    def handle(self, *args, **options) -> None:
        result = platform_bootstrap()
        creds = result.credentials
        port = "" if settings.NEXENT_PORT in (80, 443) else f":{settings.NEXENT_PORT}"
        base = f"http://{settings.NEXENT_BASE_DOMAIN}{port}"
        self.stdout.write(self.style.SUCCESS("Nexent is set up."))
        self.stdout.write(f"  Platform admin : {base}/admin/")
        self.stdout.write(f"  Demo tenant    : {result.demo_url}  (admin: {result.demo_url}admin/)")
        self.stdout.write(f"  Health         : {base}/healthz")
        self.stdout.write(f"  Log in with    : {creds.email}")
        if creds.source == "environment":
            self.stdout.write("  Password       : the value of NEXENT_ADMIN_PASSWORD")
        elif creds.source == "generated":
            self.stdout.write(f"  Password       : {creds.password}   (generated now, kept in {credentials_path()})")
        else:
            self.stdout.write(f"  Password       : in {credentials_path()} (shown once, when it was generated)")
        if not result.superuser_created and not result.demo_created:
            self.stdout.write("  (existing accounts kept; their passwords were not changed)")
