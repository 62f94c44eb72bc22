"""Shared fixtures. Tests talk to real PostgreSQL, Redis, Celery workers and Channels consumers.

The session creates, once, the platform row and three tenants in the test database (committed, so that
worker processes and consumer threads see them): `alpha` and `beta` (active) and `gamma` (suspended),
each with an owner `owner@<slug>.test`.

Most tests use `@pytest.mark.django_db`: each runs in a transaction that is rolled back, schema changes
included. Code that runs on another connection (a consumer's database thread, a Celery worker) only
sees committed rows: create those with the `committed` fixture, which writes from a separate thread and
deletes what it made afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest
from django.conf import settings
from django.db import connection, connections
from django_tenants.utils import get_public_schema_name, schema_context, tenant_context

from nexent_site.devstack import WEB_ENV, wait_for_port, web_server_command

T = TypeVar("T")
# Agent fixtures (the fake model provider, published agents) are used by several apps' tests.
pytest_plugins = ["agents.tests.fixtures", "knowledge.tests.fixtures", "api.tests.fixtures"]
PASSWORD = "Correct-Horse-Battery-9"
TENANT_SLUGS = ("alpha", "beta", "gamma")
BASE_DIR = Path(__file__).resolve().parent

# Fast hashing in the test process and its worker and web subprocesses; the behaviour under test does not
# depend on the hasher.
settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
os.environ["NEXENT_TEST_FAST_HASHING"] = "true"


def owner_email(slug: str) -> str:
    return f"owner@{slug}.test"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> Iterator[None]:
    from tenants.models import Tenant
    from tenants.services import platform_tenant_ensure, tenant_create, tenant_suspend

    with django_db_blocker.unblock():
        platform_tenant_ensure()
        for slug in TENANT_SLUGS:
            tenant_create(slug=slug, name=f"{slug.title()} Inc", owner_email=owner_email(slug), owner_password=PASSWORD)
        tenant_suspend(tenant=Tenant.objects.get(schema_name="gamma"), reason="test fixture")
        # No organisation-wide request limit by default: a suite sends far more than a tenant would per minute.
        # The rate-limit tests set the limits they test.
        for tenant in Tenant.objects.all():
            tenant.api_requests_per_minute = 0
            tenant.save(update_fields=["api_requests_per_minute"])
        connection.set_schema_to_public()
    yield
    # Consumer threads run in contexts of their own and may keep a connection open; end them so the
    # test database can be dropped.
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )


@pytest.fixture(autouse=True)
def _public_schema_after_test() -> Iterator[None]:
    yield
    connection.set_schema_to_public()


@pytest.fixture(autouse=True)
def _fresh_channel_layers() -> Iterator[None]:
    """Each test gets its own channel-layer instance: channels-redis binds its receive lock to the event loop
    that first used it, so a test cancelled mid-receive would otherwise break the following tests' sockets."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def _fresh_tenant_lookups() -> Iterator[None]:
    """Tenants, providers and agents' versions a test created or changed inside its rolled-back transaction must not
    stay in this process's caches (workers only ever cached committed rows)."""
    from agents.services.providers import chat_configs_cache
    from conversations.send_statement import published_versions_forget
    from nexent_site.tenancy import tenants_changed

    yield
    tenants_changed()
    chat_configs_cache.forget_local()
    published_versions_forget()


def _tenant(django_db_blocker: Any, slug: str) -> Any:
    from tenants.models import Tenant

    with django_db_blocker.unblock(), schema_context(get_public_schema_name()):
        return Tenant.objects.get(schema_name=slug)


@pytest.fixture
def tenant_a(django_db_setup: None, django_db_blocker: Any) -> Any:
    return _tenant(django_db_blocker, "alpha")


@pytest.fixture
def tenant_b(django_db_setup: None, django_db_blocker: Any) -> Any:
    return _tenant(django_db_blocker, "beta")


@pytest.fixture
def suspended_tenant(django_db_setup: None, django_db_blocker: Any) -> Any:
    return _tenant(django_db_blocker, "gamma")


def host_of(tenant: Any) -> str:
    return f"{tenant.schema_name}.{settings.NEXENT_BASE_DOMAIN}"


def read_sse(response: Any) -> list[dict]:
    """The events of a run's server-sent event stream (a streaming `requests` response), up to run_finished."""
    import json

    events, data = [], None
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and data is not None:
            events.append(data)
            if data["type"] == "run_finished":
                break
            data = None
    return events


def tenant_socket(tenant: Any, path: str, cookie: str | None, cookies: str = "", language: str = "") -> Any:
    """A WebsocketCommunicator on the real ASGI application, as a browser on `tenant`'s domain opens it
    (with the session cookie when given, more `cookies` ("name=value; …") and an Accept-Language)."""
    from channels.testing import WebsocketCommunicator

    from nexent_site.asgi import application

    host = host_of(tenant)
    headers = [(b"host", host.encode()), (b"origin", f"http://{host}".encode())]
    jar = "; ".join(part for part in (f"nexent_session={cookie}" if cookie else "", cookies) if part)
    if jar:
        headers.append((b"cookie", jar.encode()))
    if language:
        headers.append((b"accept-language", language.encode()))
    return WebsocketCommunicator(application, path, headers=headers)


class Committed:
    """Runs ORM work on its own connection in another thread, so it is committed at once and visible to
    worker processes and consumer threads; undo callbacks run at teardown, newest first."""

    def __init__(self, django_db_blocker: Any) -> None:
        self._blocker = django_db_blocker
        self._undo: list[tuple[Any, Callable[[], None]]] = []

    def run(self, tenant: Any, func: Callable[[], T]) -> T:
        def call() -> T:
            try:
                with self._blocker.unblock(), tenant_context(tenant):
                    return func()
            finally:
                connections.close_all()

        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(call).result()

    def on_teardown(self, tenant: Any, undo: Callable[[], None]) -> None:
        self._undo.append((tenant, undo))

    def user(self, tenant: Any, *, email: str, role: str = "member") -> Any:
        from accounts.models import User
        from accounts.services import user_create

        user = self.run(tenant, lambda: user_create(email=email, password=PASSWORD, role=role))
        self.on_teardown(tenant, lambda: User.objects.filter(pk=user.pk).delete())
        return user

    def session_cookie(self, tenant: Any, email: str) -> str:
        """A logged-in session for `email` in `tenant`'s schema; returns the session key."""
        from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
        from django.contrib.sessions.backends.db import SessionStore

        from accounts.models import User

        def make() -> str:
            user = User.objects.get(email=email)
            store = SessionStore()
            store[SESSION_KEY] = str(user.pk)
            store[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
            store[HASH_SESSION_KEY] = user.get_session_auth_hash()
            store.create()
            return store.session_key

        key = self.run(tenant, make)
        self.on_teardown(tenant, lambda: SessionStore(session_key=key).delete())
        return key

    def teardown(self) -> None:
        for tenant, undo in reversed(self._undo):
            self.run(tenant, undo)


@pytest.fixture
def committed(django_db_setup: None, django_db_blocker: Any) -> Iterator[Committed]:
    helper = Committed(django_db_blocker)
    yield helper
    helper.teardown()


def _database_url() -> str:
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    return f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def own_queue() -> Iterator[str]:
    """A chat queue of this test's own, and so a background queue of its own (see nexent_site/task_routes.py):
    what this process sends goes there, and no worker consumes them unless the test starts one. Its broker keys
    are deleted afterwards."""
    from nexent_site.celery import app
    from nexent_site.redis_pool import redis_client

    default = app.conf.task_default_queue
    queue = f"nexent-own-{uuid.uuid4().hex[:8]}"
    app.conf.task_default_queue = queue
    try:
        yield queue
    finally:
        app.conf.task_default_queue = default
        client = redis_client()
        for key in [*client.scan_iter(f"{queue}*")]:
            client.delete(key)


@contextmanager
def worker_process(queue: str, *, background: bool = True, **env_overrides: str) -> Iterator[dict]:
    """A real Celery worker process (prefork, 2 children) on the test database and real Redis, consuming the
    chat queue `queue` and (unless `background` is False) its background queue (see nexent_site/task_routes.py);
    stopped (TERM, then KILL) on exit."""
    from nexent_site.celery import app
    from nexent_site.task_routes import background_queue_for

    hostname = f"test-{queue}-{uuid.uuid4().hex[:4]}@%h"
    env = dict(
        os.environ, DATABASE_URL=_database_url(), REDIS_URL=settings.REDIS_URL, CELERY_QUEUE=queue, **env_overrides
    )
    log_path = Path(settings.DATA_DIR) / f"{queue}-{uuid.uuid4().hex[:4]}.log"
    log_path.parent.mkdir(exist_ok=True)
    log_file = log_path.open("w")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "nexent_site",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "2",
            "--queues",
            f"{queue},{background_queue_for(queue)}" if background else queue,
            "--hostname",
            hostname,
            "--loglevel",
            "INFO",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=BASE_DIR,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        expanded = hostname.replace("%h", socket.gethostname())
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"Celery worker exited with {process.returncode}:\n{log_path.read_text()}")
            if app.control.ping(destination=[expanded], timeout=0.5):
                break
        else:
            raise RuntimeError(f"Celery worker did not answer within 60 s:\n{log_path.read_text()}")
        yield {"queue": queue, "hostname": expanded, "process": process, "log": log_path}
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log_file.close()
        log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def celery_worker(django_db_setup: None) -> Iterator[dict]:
    """A real Celery worker process on the test database and real Redis, consuming a queue of its own."""
    from nexent_site.celery import app

    queue = f"nexent-test-{uuid.uuid4().hex[:8]}"
    app.conf.task_default_queue = queue
    with worker_process(queue) as worker:
        yield worker


@contextmanager
def asgi_process(queue: str, workers: int = 1) -> Iterator[dict]:
    """A real ASGI server (uvicorn: HTTP and websockets; `workers` processes) on the test database and Redis,
    enqueuing to `queue`; stopped on exit."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = dict(
        os.environ,
        DATABASE_URL=_database_url(),
        REDIS_URL=settings.REDIS_URL,
        NEXENT_PORT=str(port),
        CELERY_QUEUE=queue,
        **WEB_ENV,
    )
    log_path = Path(settings.DATA_DIR) / f"web-{port}.log"
    log_path.parent.mkdir(exist_ok=True)
    log_file = log_path.open("w")
    process = subprocess.Popen(
        web_server_command(port=port, workers=workers),  # as the Procfile runs it
        cwd=BASE_DIR,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            wait_for_port(port, 30, "the web server")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}:\n{log_path.read_text()}") from None
        yield {
            "port": port,
            "url": lambda tenant: f"http://{host_of(tenant)}:{port}",
            "process": process,
            "log": log_path,
        }
    finally:
        process.terminate()
        process.wait(20)
        log_file.close()
        log_path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def asgi_server(celery_worker: dict) -> Iterator[dict]:
    """The real ASGI server (uvicorn: HTTP and websockets) on the test database, for browser and API tests."""
    with asgi_process(celery_worker["queue"]) as server:
        yield server


@pytest.fixture
def browser_page(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A page in headless Chromium (Debian's package, driven by Playwright)."""
    import shutil

    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; Django's documented way to let the test's
    # own (synchronous) database work go on beside it.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    executable = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        yield page
        browser.close()
