"""Which Celery queue a task goes to.

Two queues, so that work nobody waits on never stands between a user and an answer:

- the **chat queue** (`CELERY_QUEUE`, "nexent"): chat turns and agent runs, and the probes that tell whether
  the workers serving them are alive. `make run`'s `worker` processes consume it;
- the **background queue** (`CELERY_BACKGROUND_QUEUE`, by default the chat queue's name + ".background"):
  document ingestion, conversation titles and the scheduled clean-ups. `make run`'s `background` process
  consumes it, at a lower CPU priority.

In one queue, a tenant's bulk upload put hundreds of ingestion tasks ahead of every tenant's next chat turn
(the queue is first in, first out), and under load each title or ingestion step took CPU time from the
answers streaming beside it.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

BACKGROUND_TASKS = frozenset(
    {
        "knowledge.tasks.document_ingest",
        "knowledge.tasks.knowledge_watchdog",
        "conversations.tasks.conversation_title_generate",
        "agents.tasks.agent_runs_watchdog",
        "conversations.tasks.conversation_messages_watchdog",
        "api.tasks.idempotency_purge",
        "tenants.tasks.background_heartbeat",
    }
)


def chat_queue() -> str:
    from nexent_site.celery import app

    return app.conf.task_default_queue


def background_queue_for(chat_queue_name: str) -> str:
    """The background queue that goes with the chat queue `chat_queue_name`: `CELERY_BACKGROUND_QUEUE`, else the
    chat queue's name + ".background" (as the Procfile's `background` command spells it)."""
    return settings.CELERY_BACKGROUND_QUEUE or f"{chat_queue_name}.background"


def background_queue() -> str:
    """This process's background queue (read when a task is sent, so a process that changes its default queue,
    as the tests do, has a background queue of its own too)."""
    return background_queue_for(chat_queue())


def route_task(name: str, args: Any, kwargs: Any, options: dict, task: Any = None, **kw: Any) -> dict | None:
    """Celery router (`CELERY_TASK_ROUTES`): background tasks to the background queue; None leaves the others
    on the default (chat) queue."""
    if name in BACKGROUND_TASKS:
        return {"queue": background_queue()}
    return None
