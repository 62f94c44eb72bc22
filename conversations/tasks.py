from typing import Any

from celery import shared_task

from agents.services.runs import RunMustWait, run_execute, run_from_handoff, run_wait_for_slot
from conversations.models import Message
from conversations.services import (
    conversation_notify,
    conversation_title_ensure,
    message_announce,
    message_finalize,
    message_finalize_with_run_end,
    message_mark_streaming,
    messages_watchdog,
    turn_attachments_read,
)
from tenants.sweep import tenants_sweep


@shared_task(
    name="conversations.tasks.chat_turn_execute", acks_late=True, ignore_result=True, bind=True, max_retries=None
)
def chat_turn_execute(
    self: Any,
    message_id: int,
    attachments: bool = True,
    titled: bool | None = None,
    woken_since: float | None = None,
    run: dict | None = None,
    conversation_id: str | None = None,
) -> str | None:
    """Run the agent for a pending assistant message, then write the message from the run. Safe to
    deliver twice: the run executes once, and finalizing is idempotent. `attachments=False`: the turn's
    message came without files, so there is nothing to read first. `titled`: whether the conversation had a
    title when the turn began (None: read it). While the tenant has its most runs executing or a provider the
    agent uses is at its concurrency limit, the turn stays pending and waits in line (agents.tasks:
    `woken_since`).

    `run` (`run_handoff`) and `conversation_id`: the turn's run and conversation as the web saved them a moment
    ago, for a turn without files: the run starts without reading them, and is read with its claim once its model
    request is out (`run_execute`'s `read`)."""
    handed = run_from_handoff(run) if run is not None and conversation_id and not attachments else None
    if handed is not None:
        message = Message(
            pk=message_id,
            conversation_id=conversation_id,
            run=handed,
            role=Message.Role.ASSISTANT,
            status=Message.Status.PENDING,
        )
        message._state.adding = False
        return _turn_execute(self, message, titled, woken_since, read=False)
    # `get`, not `first()`: no ORDER BY to compile (a third of this query's CPU); only the run (not its agent,
    # version or conversation: a third more): the run's spec has what the run needs of them
    try:
        message = Message.objects.select_related("run").get(pk=message_id)
    except Message.DoesNotExist:
        return None
    if message.run_id is None:
        return None
    if attachments and turn_attachments_read(message=message):
        message.run.refresh_from_db(fields=["input"])
    return _turn_execute(self, message, titled, woken_since)


def _turn_execute(
    task: Any, message: Message, titled: bool | None, woken_since: float | None, read: bool = True
) -> str | None:
    """`chat_turn_execute` (`task`, bound) once its message (with its run) is at hand."""
    message_id = message.pk
    finalized: list[Message] = []
    try:
        run = run_execute(
            run_id=str(message.run_id),
            run=message.run,
            # "streaming" once the answer's first words (or step) are out: the update is off the path to the first
            # token
            on_first_output=lambda: message_mark_streaming(message=message),
            # the message written by the statement that stores the run's end: a page that sees `run_finished`
            # finds it final
            on_finish=lambda finished, end: message_finalize_with_run_end(
                message=message, run=finished, statement=end, done=finalized.append
            ),
            waited=bool(task.request.retries or woken_since),
            read=read,
        )
    except RunMustWait as busy:  # its files are read by now
        args = [message_id, False, titled]
        run_wait_for_slot(busy, run_id=str(message.run_id), task=task.name, args=args, since=woken_since)
        if woken_since is not None:  # an extra try: the turn's own tries go on
            return None
        raise task.retry(args=args, countdown=busy.retry_in_s(task.request.retries)) from None
    if run is None:  # no such run here (a forged task)
        return None
    # not executed here (delivered twice): the message from the run as stored
    message = finalized[0] if finalized else message_finalize(message=message, run=run)
    if message.is_active:  # delivered again while another worker is still on the run: that one announces it
        return message.status
    message_announce(message=message, titled=titled)
    return message.status


@shared_task(name="conversations.tasks.conversation_title_generate", acks_late=True, ignore_result=True)
def conversation_title_generate(conversation_id: str, provider_id: int | None = None) -> str | None:
    """After the first exchange: the title (from the chat model that answered, else the first words), sent to
    open pages. Nothing when the conversation has a title already."""
    title = conversation_title_ensure(conversation_id=conversation_id, provider_id=provider_id)
    if title:
        conversation_notify(conversation_id=conversation_id, payload={"type": "title", "title": title})
    return title or None


@shared_task(name="conversations.tasks.conversation_messages_watchdog", ignore_result=True)
def conversation_messages_watchdog() -> None:
    """Scheduled by beat (in the public schema): close answers left active by a lost turn, in every active tenant."""
    tenants_sweep(messages_watchdog)
