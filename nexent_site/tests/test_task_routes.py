"""Chat turns and background work go to separate Celery queues (nexent_site/task_routes.py), so a backlog of
ingestion or titles never stands between a user and an answer. Real Celery workers on real Redis."""

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from django_tenants.utils import tenant_context

from api.tasks import idempotency_purge
from conftest import worker_process
from nexent_site.celery import app
from nexent_site.task_routes import BACKGROUND_TASKS, background_queue
from tenants.tasks import tenant_probe

BASE_DIR = Path(__file__).resolve().parents[2]


def queue_of(task_name: str) -> str:
    return app.amqp.router.route({}, task_name, (), {})["queue"].name


def test_ingestion_titles_and_clean_ups_go_to_the_background_queue_chat_turns_and_runs_do_not(own_queue: str) -> None:
    assert background_queue() == f"{own_queue}.background"
    for name in (
        "knowledge.tasks.document_ingest",
        "conversations.tasks.conversation_title_generate",
        "knowledge.tasks.knowledge_watchdog",
        "agents.tasks.agent_runs_watchdog",
        "conversations.tasks.conversation_messages_watchdog",
        "api.tasks.idempotency_purge",
    ):
        assert queue_of(name) == f"{own_queue}.background", name
    for name in (
        "conversations.tasks.chat_turn_execute",
        "agents.tasks.agent_run_execute",
        # the probes tell whether the workers that serve chats are alive
        "tenants.tasks.tenant_probe",
        "tenants.tasks.platform_heartbeat",
    ):
        assert queue_of(name) == own_queue, name
    app.loader.import_default_modules()  # every app's tasks module
    assert set(app.tasks) >= BACKGROUND_TASKS, "a background task was renamed: route it again"


def test_the_background_queue_can_be_named(own_queue: str, settings: Any) -> None:
    settings.CELERY_BACKGROUND_QUEUE = "slow-lane"
    assert queue_of("knowledge.tasks.document_ingest") == "slow-lane"
    assert queue_of("conversations.tasks.chat_turn_execute") == own_queue


def test_make_run_starts_a_background_worker_on_the_queue_the_tasks_are_sent_to(own_queue: str) -> None:
    """The Procfile's `background` process, its command expanded by the shell as honcho runs it."""
    (line,) = [line for line in (BASE_DIR / "Procfile").read_text().splitlines() if line.startswith("background:")]
    expanded = subprocess.run(
        ["sh", "-c", f"echo {line.split(':', 1)[1]}"],
        env={"CELERY_QUEUE": own_queue, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert expanded[:3] == ["nice", "-n", "10"]  # gives way to web and chat workers when CPU time is short
    assert expanded[expanded.index("--queues") + 1] == background_queue()


@pytest.mark.django_db
def test_a_backlog_of_background_tasks_does_not_hold_up_the_chat_queue(own_queue: str, tenant_a: Any) -> None:
    """Thirty background tasks queued first, then a chat-queue task: a worker of the chat queue alone answers
    the latter and leaves the former where they are; the background worker then takes them."""
    broker = redis.Redis.from_url(app.conf.broker_url)
    try:
        with worker_process(own_queue, background=False):
            for _ in range(30):
                idempotency_purge.delay()
            with tenant_context(tenant_a):
                probe = tenant_probe.delay()
            assert probe.get(timeout=30)["schema"] == tenant_a.schema_name
            assert broker.llen(f"{own_queue}.background") == 30
        with worker_process(own_queue):
            deadline = time.monotonic() + 30
            while broker.llen(f"{own_queue}.background"):
                assert time.monotonic() < deadline, "the background queue was not consumed"
                time.sleep(0.2)
    finally:
        broker.delete(f"{own_queue}.background")
        broker.close()
