"""Web and worker processes load what the first chat needs and freeze start-up's objects before serving
(nexent_site/process_ready.py). Each check runs in a fresh interpreter, as a server process starts."""

import os
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]
REPORT = (
    "import gc, sys; print(gc.get_freeze_count(), "
    "'nexent_site.urls_tenants' in sys.modules, 'nexent_site.urls_public' in sys.modules)"
)


def _run(code: str) -> tuple[int, bool, bool]:
    result = subprocess.run(
        [sys.executable, "-c", f"{code}\n{REPORT}"],
        cwd=BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "nexent_site.settings"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    frozen, tenants_urls, public_urls = result.stdout.split()[-3:]
    return int(frozen), tenants_urls == "True", public_urls == "True"


def test_a_fresh_interpreter_has_nothing_frozen_and_no_urlconf_loaded():
    """The baseline the two tests below differ from: Django set up alone does neither."""
    assert _run("import django; django.setup()") == (0, False, False)


def test_a_web_process_is_ready_once_it_has_loaded_the_asgi_application():
    frozen, tenants_urls, public_urls = _run("import nexent_site.asgi")
    assert tenants_urls and public_urls  # not on the first finished answer, inside the event loop
    assert frozen > 100_000  # Django, Channels, DRF… out of the collector's full passes


def test_a_celery_worker_is_ready_once_it_has_started():
    frozen, tenants_urls, public_urls = _run(
        "import django; django.setup()\n"
        "from nexent_site.celery import app\n"
        "from celery.signals import worker_ready\n"
        "worker_ready.send(sender=None)"
    )
    assert tenants_urls and public_urls
    assert frozen > 100_000
