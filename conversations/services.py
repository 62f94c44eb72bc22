"""Chat turns: a user message starts a run of the conversation's agent; when the run ends, the assistant
message is written from it (content, status, units, citations, usage). The web process only saves and
enqueues; the worker runs the agent (see conversations.tasks)."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.postgres.expressions import ArraySubquery
from django.db import IntegrityError, connection, transaction
from django.db.models import OuterRef, Q, QuerySet
from django.db.models.functions import JSONObject
from django.utils import timezone

from accounts.models import User
from agents.models import TERMINAL_STATUSES, Agent, AgentRun, RunStatus
from agents.runtime.streams import group_send_sync
from agents.services.providers import chat_provider_configs
from agents.services.runs import run_cancel, run_handoff, run_prepare
from conversations.models import Attachment, Citation, Conversation, Message, MessageUnit
from conversations.send_statement import published_version_known, published_version_remember, turn_send_checked
from nexent_site.errors import ApplicationError
from nexent_site.integrations.openai_compat import chat_complete, completion_text
from nexent_site.statements import Statement, insert_sql, insert_where_sql, marked_saved, update_sql

logger = logging.getLogger(__name__)

RUN_TO_MESSAGE_STATUS = {
    RunStatus.SUCCEEDED: Message.Status.COMPLETED,
    RunStatus.FAILED: Message.Status.FAILED,
    RunStatus.TIMED_OUT: Message.Status.FAILED,
    RunStatus.CANCELLED: Message.Status.STOPPED,
}
EVENT_TO_UNIT = {
    "step_started": MessageUnit.Kind.STEP,
    "tool_call": MessageUnit.Kind.TOOL_CALL,
    "tool_result": MessageUnit.Kind.TOOL_RESULT,
    "subagent_event": MessageUnit.Kind.SUBAGENT,
    "final_answer": MessageUnit.Kind.FINAL_ANSWER,
    "error": MessageUnit.Kind.ERROR,
}


TITLE_PROMPT = "Write a title of at most six words for this conversation. Reply with the title only."


def conversation_group_name(schema_name: str, conversation_id: str) -> str:
    return f"chat.{schema_name}.{str(conversation_id).replace('-', '')}"


def conversation_start(*, user: User, agent: Agent, title: str = "") -> Conversation:
    if agent.published_version_id is None:
        raise ApplicationError(f"“{agent.name}” is not published yet.", code="not_published", status=409)
    return Conversation.objects.create(user=user, agent=agent, title=title[:200])


def conversation_history(conversation: Conversation) -> list[dict]:
    """The turns the agent gets: completed messages, user messages with their attachments' text."""
    turns = conversation.messages.filter(status=Message.Status.COMPLETED).order_by("created_at", "id")
    return _history(_with_attachments(conversation, turns))


def _with_attachments(conversation: Conversation, messages: QuerySet[Message]) -> list[Message]:
    """`messages`, each with its attachments (and their files) at hand: fetched in one more query where the
    conversation has any, else known to be none without a query."""
    if conversation.has_attachments:
        return list(messages.prefetch_related("attachments__file"))
    messages = list(messages)
    for message in messages:
        message._prefetched_objects_cache = {"attachments": []}
    return messages


def _history(messages: Iterable[Message]) -> list[dict]:
    """`messages` (in order, attachments prefetched) as the agent gets them: the completed ones, user messages
    with their attachments' text."""
    from conversations.attachments import message_text_for_agent

    history = []
    for message in messages:
        if message.status != Message.Status.COMPLETED:
            continue
        content = message_text_for_agent(message) if message.role == Message.Role.USER else message.content
        if content:
            history.append({"role": message.role, "content": content})
    return history


def _turn_history(conversation: Conversation) -> tuple[list[dict], bool, bool]:
    """For a new turn, in one query: the history the agent gets, whether an answer is still being written, and
    whether an attached file is still waiting to be read. A conversation that never had files reads three
    columns per message, not model instances (a long conversation's turn paid for every earlier message)."""
    ordered = conversation.messages.order_by("created_at", "id")
    if conversation.has_attachments:
        messages = _with_attachments(conversation, ordered)
        busy = any(message.is_active for message in messages)
        unread = any(a.status == Attachment.Status.PENDING for message in messages for a in message.attachments.all())
        return _history(messages), busy, unread
    rows = list(ordered.values_list("role", "content", "status"))
    busy = any(status in Message.ACTIVE_STATUSES for _, _, status in rows)
    # as `_history` gives them: completed messages with text (no attachments to add)
    history = [
        {"role": role, "content": text} for role, text, status in rows if status == Message.Status.COMPLETED and text
    ]
    return history, busy, False


def _conversation_lock(conversation: Conversation) -> Conversation:
    """The conversation, locked for this transaction (one turn at a time), with its agent's published version."""
    return (
        Conversation.objects.select_for_update(of=("self",))
        .select_related("agent__published_version")
        .get(pk=conversation.pk)
    )


# what a turn reads of the conversation, its agent and the agent's published version (see `_start_turn`,
# agents.services.runs.run_prepare)
TURN_FIELDS = (
    "user",
    "agent",
    "title",
    "archived",
    "has_attachments",
    "agent__slug",
    "agent__published_version",
    "agent__published_version__number",
    "agent__published_version__spec",
)


@functools.cache
def _turn_read() -> QuerySet[Conversation]:
    """The query `_conversation_for_turn` runs, built once per process (cloned for each turn, never evaluated): only
    the columns a turn reads, a third of the three tables' (the agent's prompts, for one, are in the spec)."""
    rows = ArraySubquery(
        Message.objects.filter(conversation=OuterRef("pk"))
        .order_by("created_at", "id")
        .values(row=JSONObject(role="role", content="content", status="status"))
    )
    return Conversation.objects.select_related("agent__published_version").only(*TURN_FIELDS).annotate(turn_rows=rows)


def _conversation_for_turn(conversation: Conversation) -> Conversation:
    """The conversation as a new turn reads it, in one query: its agent and published version, and its messages'
    role, content and status in order (`turn_rows`, for the "one turn at a time" check and the history)."""
    try:
        return _turn_read().get(pk=conversation.pk)
    except Conversation.DoesNotExist:
        raise ApplicationError("Conversation not found.", code="not_found", status=404) from None


def conversation_message_send(
    *, conversation: Conversation, user: User, content: str, uploads: Sequence[Any] = (), api_key: Any = None
) -> tuple[Message, Message]:
    """Save the user's message (with its attached files) and a pending assistant message, and start the
    agent's run (enqueued on commit). One turn at a time per conversation. A refused file refuses the
    whole message: nothing is saved. Sent with an API key, the run is the key's (trigger `api`, counted
    against the key's monthly quota: QuotaExceeded when it is used up).

    A message without files, in a conversation that never had any (the common turn), takes one statement when
    this process knows the agent's published version (`conversations.send_statement`), else two: the conversation
    with its messages, then the run and both messages in one `INSERT` (`_turn_insert`), where the send took six
    round trips before (a transaction, a lock, the history, two inserts), each waiting for PostgreSQL's process and
    then this thread to get a CPU: measured at 50 chats on 2 cores, they were most of the time from the user's
    message to the worker's start. Two sends at once: the conversation's one-active-answer constraint refuses the
    second, as the lock did."""
    if uploads:
        return _send_with_files(conversation=conversation, user=user, content=content, uploads=uploads, api_key=api_key)
    content = _content_checked(content, uploads)
    sent = _send_on_known_version(conversation=conversation, user=user, content=content, api_key=api_key)
    if sent is not None:
        return sent
    conversation = _conversation_for_turn(conversation)
    _conversation_checked(conversation, user)
    published_version_remember(conversation.agent)
    if conversation.has_attachments:  # earlier files are read into the history: the transactional path
        return _send_with_files(conversation=conversation, user=user, content=content, uploads=(), api_key=api_key)
    rows = conversation.turn_rows
    if any(row["status"] in Message.ACTIVE_STATUSES for row in rows):
        raise _busy()
    # as `_history` gives them: completed messages with text (no attachments to add)
    history = [
        {"role": row["role"], "content": row["content"]}
        for row in rows
        if row["status"] == Message.Status.COMPLETED and row["content"]
    ]
    history.append({"role": "user", "content": content})
    user_message = Message(conversation=conversation, role=Message.Role.USER, content=content)
    return user_message, _start_turn(
        conversation=conversation,
        user=user,
        history=history,
        api_key=api_key,
        attachments=False,
        user_message=user_message,
    )


def _send_on_known_version(
    *, conversation: Conversation, user: User, content: str, api_key: Any
) -> tuple[Message, Message] | None:
    """`conversation_message_send`'s common turn in one statement (`turn_send_checked`), when this process knows
    the agent's published version; None when it does not, or when the conversation is not as a plain new turn needs
    it (another user's, archived, with files, an answer being written, the agent published anew): nothing is
    written then, and the caller reads the conversation to find out."""
    version = published_version_known(conversation.agent_id)
    if version is None:
        return None
    run = run_prepare(
        agent=Agent(pk=conversation.agent_id, published_version=version),
        messages=[{"role": "user", "content": content}],  # the history goes before it in the statement
        trigger=AgentRun.Trigger.API if api_key is not None else AgentRun.Trigger.CHAT,
        user_email=user.email,
        api_key=api_key,
    )
    user_message = Message(conversation=conversation, role=Message.Role.USER, content=content)
    assistant = Message(conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.PENDING, run=run)
    with _one_active_answer():
        sent = turn_send_checked(
            run=run, user_message=user_message, assistant=assistant, user_id=user.pk, version=version
        )
    if sent is None:
        return None
    titled, run.input = sent
    _turn_enqueue(conversation=conversation, run=run, assistant=assistant, titled=titled, touch=False)
    return user_message, assistant


def _busy() -> ApplicationError:
    """A new turn while an answer is still being written."""
    return ApplicationError("Wait for the current answer, or stop it.", code="busy", status=409)


def _conversation_checked(conversation: Conversation, user: User) -> None:
    """ApplicationError unless `user` may send messages to `conversation` (as read in this transaction)."""
    if conversation.user_id != user.pk:
        raise ApplicationError("Conversation not found.", code="not_found", status=404)
    if conversation.archived:
        raise ApplicationError("This conversation is archived; restore it to continue.", code="archived", status=409)


def _content_checked(content: str, uploads: Sequence[Any]) -> str:
    """The message's text, stripped, if it may be sent; else ApplicationError."""
    content = (content or "").strip()
    if not content and not uploads:
        raise ApplicationError("Write a message first.", code="empty_message")
    if len(content) > settings.CHAT_MAX_MESSAGE_CHARS:
        raise ApplicationError(
            f"Messages are limited to {settings.CHAT_MAX_MESSAGE_CHARS:,} characters.", code="message_too_long"
        )
    return content


@transaction.atomic
def _send_with_files(
    *, conversation: Conversation, user: User, content: str, uploads: Sequence[Any], api_key: Any
) -> tuple[Message, Message]:
    """`conversation_message_send` for a message with files, or in a conversation that has some: in a
    transaction, the conversation locked, the attachments' text read into the history."""
    conversation = _conversation_lock(conversation)
    _conversation_checked(conversation, user)
    content = _content_checked(content, uploads)
    history, busy, unread = _turn_history(conversation)
    if busy:
        raise _busy()
    user_message = Message(conversation=conversation, role=Message.Role.USER, content=content)
    if uploads:
        from conversations.attachments import attachments_store, message_text_for_agent

        user_message.save()  # the attachments point to it
        attachments_store(message=user_message, uploads=uploads, user=user)
        history.append({"role": "user", "content": message_text_for_agent(user_message)})
        unread = True
    else:
        history.append({"role": "user", "content": content})
    return user_message, _start_turn(
        conversation=conversation,
        user=user,
        history=history,
        api_key=api_key,
        attachments=unread,
        new_attachments=bool(uploads),
        user_message=None if uploads else user_message,
    )


def _start_turn(
    *,
    conversation: Conversation,
    user: User,
    history: list[dict],
    api_key: Any = None,
    attachments: bool = True,
    new_attachments: bool = False,
    user_message: Message | None = None,
) -> Message:
    """The run and the pending assistant message of a turn, the worker's task enqueued on commit.
    `attachments`: whether the conversation has files the worker must read before the agent runs;
    `new_attachments`: whether this turn's message brought some; `user_message`: the turn's message, not saved
    yet (then saved with the answer's). The run and the messages are written in one statement (`_turn_insert`)."""
    run = run_prepare(
        agent=conversation.agent,
        messages=history or [{"role": "user", "content": ""}],
        trigger=AgentRun.Trigger.API if api_key is not None else AgentRun.Trigger.CHAT,
        user_email=user.email,
        api_key=api_key,
    )
    assistant = Message(conversation=conversation, role=Message.Role.ASSISTANT, status=Message.Status.PENDING, run=run)
    _turn_insert(run, [user_message, assistant] if user_message is not None else [assistant])
    if new_attachments:  # in the transaction: the next turn reads it to know there are files to read
        Conversation.objects.filter(pk=conversation.pk).update(updated_at=timezone.now(), has_attachments=True)
    _turn_enqueue(
        conversation=conversation,
        run=run,
        assistant=assistant,
        titled=bool(conversation.title),
        attachments=attachments,
        touch=not new_attachments,
    )
    return assistant


def _turn_enqueue(
    *,
    conversation: Conversation,
    run: AgentRun,
    assistant: Message,
    titled: bool,
    attachments: bool = False,
    touch: bool = True,
) -> None:
    """The turn's task, enqueued on commit. `titled`: whether the conversation has a title (the worker asks for
    one after a first answer without loading the conversation); `touch`: move the conversation to the top of its
    user's list (not needed when the send did already)."""
    from conversations.tasks import chat_turn_execute

    timeout = run.spec["run_timeout_s"]
    # a turn without files hands its run to the worker, which starts it without reading it first
    handoff = None if attachments else run_handoff(run)
    kwargs = {"run": handoff, "conversation_id": str(conversation.pk)} if handoff else {}
    transaction.on_commit(
        lambda: chat_turn_execute.apply_async(
            args=[assistant.pk, attachments, titled],
            kwargs=kwargs,
            kwargsrepr="{…}" if kwargs else None,  # the conversation's messages stay out of logs and events
            soft_time_limit=timeout + 15,
            time_limit=timeout + 60,
        )
    )
    if touch:
        # the conversation goes to the top of its user's list once the worker has been told: one round trip less
        # before the turn starts (a failure here leaves the order, not the turn)
        now = timezone.now()
        transaction.on_commit(
            lambda: Conversation.objects.filter(pk=conversation.pk, updated_at__lt=now).update(updated_at=now),
            robust=True,
        )


ONE_ACTIVE_ANSWER = "conversations_one_active_answer"  # the constraint: one answer being written per conversation


@contextmanager
def _one_active_answer() -> Iterator[None]:
    """Around a statement writing a turn's answer: a second answer being written in the conversation (two sends at
    once) is refused as busy by the ONE_ACTIVE_ANSWER constraint. Inside a caller's transaction (a regenerate, a
    message with files), a savepoint keeps the refusal from aborting it; on its own (the common send) the statement
    is its own transaction."""
    savepoint = transaction.atomic() if connection.in_atomic_block else nullcontext()
    try:
        with savepoint:
            yield
    except IntegrityError as exc:
        if ONE_ACTIVE_ANSWER in str(exc):
            raise _busy() from None
        raise


def _turn_insert(run: AgentRun, messages: list[Message]) -> None:
    """Write a turn's run and its messages (in order) in one statement, one round trip: Django's own `INSERT` for
    each model (every field, defaults and `auto_now_add` included), the run's in a `WITH` before the messages'.
    The messages get their ids as `bulk_create` gives them. A second answer being written in the conversation
    (two sends at once) is refused as busy by the ONE_ACTIVE_ANSWER constraint, and nothing is written."""
    run_sql, run_params = insert_sql(AgentRun, [run])
    messages_sql, messages_params = insert_sql(Message, messages, returning=True)
    with _one_active_answer(), connection.cursor() as cursor:
        cursor.execute(f"WITH new_run AS ({run_sql}) {messages_sql}", run_params + messages_params)
        ids = [row[0] for row in cursor.fetchall()]
    marked_saved([run, *messages], [run.pk, *ids])


@transaction.atomic
def message_regenerate(*, message: Message, user: User) -> Message:
    """Answer the last user message again: the latest assistant message is replaced by a new turn."""
    conversation = message.conversation
    latest = conversation.messages.order_by("-created_at", "-id").first()
    if message.role != Message.Role.ASSISTANT or latest is None or latest.pk != message.pk:
        raise ApplicationError("Only the latest answer can be regenerated.", code="not_latest")
    if message.is_active:
        raise _busy()
    if conversation.archived:
        raise ApplicationError("This conversation is archived; restore it to continue.", code="archived", status=409)
    message.delete()
    return _start_turn(conversation=conversation, user=user, history=conversation_history(conversation))


def message_stop(*, message: Message) -> Message:
    """Stop the answer being written. A running agent stops at its next event and its worker writes the
    message; an answer whose run had not started, or whose worker died, is written stopped here and now (with what
    it had streamed)."""
    if message.run_id and message.is_active:
        run = run_cancel(run=message.run)
        if run.is_finished:  # cancelled before a worker took it: no worker will write the message soon
            message = message_finalize(message=message, run=run)
            message_announce(message=message)
    return message


def message_feedback(*, message: Message, value: str, comment: str = "") -> Message:
    if message.role != Message.Role.ASSISTANT:
        raise ApplicationError("Only answers take feedback.", code="bad_feedback")
    if value not in Message.Feedback.values:
        raise ApplicationError("Feedback is like, dislike or empty.", code="bad_feedback")
    message.feedback, message.feedback_comment = value, comment[:2000]
    message.save(update_fields=["feedback", "feedback_comment"])
    return message


def conversation_update(
    *, conversation: Conversation, title: str | None = None, archived: bool | None = None
) -> Conversation:
    if title is not None:
        conversation.title = title.strip()[:200]
    if archived is not None:
        conversation.archived = archived
    conversation.save(update_fields=["title", "archived", "updated_at"])
    return conversation


@transaction.atomic
def conversation_delete(*, conversation: Conversation) -> None:
    """Delete the conversation with its messages and the files attached to them."""
    from conversations.models import Attachment
    from files.services import file_delete

    for message in conversation.messages.filter(status__in=Message.ACTIVE_STATUSES, run__isnull=False).select_related(
        "run"
    ):
        run_cancel(run=message.run)
    files = [a.file for a in Attachment.objects.filter(message__conversation=conversation).select_related("file")]
    conversation.delete()
    for stored in files:
        file_delete(stored_file=stored)


# --- worker side ------------------------------------------------------------------------------------------
def message_mark_streaming(*, message: Message) -> None:
    Message.objects.filter(pk=message.pk, status=Message.Status.PENDING).update(status=Message.Status.STREAMING)


@transaction.atomic(savepoint=False)
def message_finalize(*, message: Message, run: AgentRun | None = None) -> Message:
    """Write the assistant message from its finished run (`run`, when the caller has it as it ended), in the
    caller's transaction if there is one. Idempotent: units and citations are rebuilt.

    Three callers may meet here for one message: the turn's worker (twice, when its task is delivered twice; its
    first time is `message_finalize_with_run_end`), a stop that cancelled the run before it started, and the
    watchdog. Only the first writes the units beside a still-active message: its conditional `UPDATE` holds the
    row, so a second one waits for the first's commit, finds the message no longer active, and rebuilds the
    units instead of adding to them."""
    run = run or AgentRun.objects.get(pk=message.run_id)
    if not run.is_finished:
        return message
    was_active = message.is_active
    fields = _finalized_fields(message, run)
    messages = Message.objects.filter(pk=message.pk)
    first = was_active and messages.filter(status__in=Message.ACTIVE_STATUSES).update(**fields)
    if not first:
        messages.update(**fields)
        message.units.all().delete()
        message.citations.all().delete()
    units, citations = _finalized_parts(message, run)
    MessageUnit.objects.bulk_create(units)
    Citation.objects.bulk_create(citations)
    # what was just written, as if prefetched: `message.units.all()` and `.citations.all()` need no query
    message._prefetched_objects_cache = {"units": units, "citations": citations}
    return message


def message_finalize_with_run_end(
    *, message: Message, run: AgentRun, statement: Statement, done: Callable[[Message], None]
) -> None:
    """The turn's worker's `message_finalize`: the answer's writes joined to the statement that writes its run's
    end (`run_execute`'s `on_finish`), so that a page that sees `run_finished` finds the answer final, and one
    round trip writes both. Like `message_finalize`'s first writer, they write only while the answer is still
    being written (the units and citations only if its `UPDATE` did); an answer a stop or the watchdog closed
    meanwhile is finalized again once the statement has run, by `message_finalize`. `done` gets the message,
    final, with its units and citations at hand."""
    fields = _finalized_fields(message, run)
    units, citations = _finalized_parts(message, run)
    active = [status.value for status in Message.ACTIVE_STATUSES]
    statement.part("answer", update_sql(message, list(fields), where={"status__in": active}, returning=True))
    for name, objs, model in (("answer_units", units, MessageUnit), ("answer_citations", citations, Citation)):
        if objs:
            statement.part(name, insert_where_sql(model, objs, where="EXISTS (SELECT 1 FROM answer)", returning=True))
            statement.returns(f"ARRAY(SELECT id FROM {name} ORDER BY id)", functools.partial(_marked_if_written, objs))

    def written(updated: int) -> None:
        if not updated:  # closed meanwhile by someone else: rebuilt from this run, as a second writer does
            done(message_finalize(message=message, run=run))  # in a transaction of its own
            return
        message._prefetched_objects_cache = {"units": units, "citations": citations}
        done(message)

    statement.returns("(SELECT count(*) FROM answer)", written)


def _marked_if_written(objs: list[Any], ids: list[int]) -> None:
    if ids:  # none when the answer's UPDATE found it closed already
        marked_saved(objs, ids)


def _finalized_fields(message: Message, run: AgentRun) -> dict[str, Any]:
    """What a finished run makes of its answer's own fields, set on `message` too."""
    fields = {
        "status": RUN_TO_MESSAGE_STATUS[run.status],
        "content": run.output,
        "error": run.error,
        "tokens_in": run.tokens_in,
        "tokens_out": run.tokens_out,
    }
    for name, value in fields.items():
        setattr(message, name, value)
    return fields


def _finalized_parts(message: Message, run: AgentRun) -> tuple[list[MessageUnit], list[Citation]]:
    """The answer's units (from its run's steps, in order; no query when the run comes from `run_execute`) and
    the citations of its final answer, not saved."""
    units, cited = [], []
    for step in run.steps.all():
        kind = EVENT_TO_UNIT.get(step.type)
        if kind is None:
            continue
        units.append(
            MessageUnit(message=message, position=len(units), kind=kind, data={**step.data, "agent": step.agent_path})
        )
        if step.type == "final_answer":
            cited = step.data.get("citations") or []
    citations = [
        Citation(
            message=message,
            index=c.get("index", i + 1),
            document_id=c.get("document_id", 0),
            document_title=c.get("document_title", ""),
            chunk_id=c.get("chunk_id", 0),
            page=c.get("page"),
            score=c.get("score", 0),
            text=c.get("text", "")[:4000],
        )
        for i, c in enumerate(cited)
    ]
    return units, citations


def message_announce(*, message: Message, titled: bool | None = None) -> None:
    """Tell the conversation's open pages that `message` (finalized, with its run loaded) is done, with the
    message itself to render; after a first completed answer, ask for the title. `titled`: whether the
    conversation had a title when the turn began (else its title is read)."""
    conversation_notify(
        conversation_id=str(message.conversation_id),
        payload={
            "type": "message_done",
            "message_id": message.pk,
            "status": message.status,
            "run_id": str(message.run_id) if message.run_id else None,
            # the pages render it from this instead of reading it back (three queries per page)
            "message": message_snapshot(message),
        },
    )
    if message.status != Message.Status.COMPLETED or message.run is None:
        return
    if titled is None:
        titled = bool(message.conversation.title)
    if not titled:  # the task itself leaves a conversation titled meanwhile alone
        from conversations.tasks import conversation_title_generate

        # a task of its own: the model call for the title must not keep the worker's thread from the next turn
        conversation_title_generate.delay(str(message.conversation_id), message.run.spec.get("provider_id"))


def messages_watchdog() -> int:
    """Close the current tenant's answers that nothing else will: their run ended (the runs' watchdog gave up
    on it, or it was cancelled before it started) more than MESSAGE_WATCHDOG_GRACE_S ago but the turn's task
    never came to write the message (lost with its worker, or still queued), or their run was deleted. Left
    alone, such a message keeps its conversation "busy" for good. Returns how many were closed."""
    cutoff = timezone.now() - timedelta(seconds=settings.MESSAGE_WATCHDOG_GRACE_S)
    stuck = (
        Message.objects.filter(role=Message.Role.ASSISTANT, status__in=Message.ACTIVE_STATUSES)
        .filter(
            Q(run__status__in=TERMINAL_STATUSES, run__finished_at__lt=cutoff)
            | Q(run__isnull=True, created_at__lt=cutoff)
        )
        .select_related("conversation", "run")
    )
    closed = 0
    for message in stuck:
        with transaction.atomic():
            if message.run is None:
                fields = {"status": Message.Status.FAILED, "error": "The run behind this answer was deleted."}
                if not Message.objects.filter(pk=message.pk, status__in=Message.ACTIVE_STATUSES).update(**fields):
                    continue
                for name, value in fields.items():
                    setattr(message, name, value)
            else:
                message = message_finalize(message=message, run=message.run)
        logger.warning("closed answer %s left %s by its turn", message.pk, message.status)
        message_announce(message=message)
        closed += 1
    return closed


MESSAGE_SNAPSHOT_MAX_BYTES = 256 * 1024
SNAPSHOT_FIELDS = ("id", "role", "status", "content", "error", "tokens_in", "tokens_out", "feedback")
UNIT_FIELDS = ("position", "kind", "data")
CITATION_FIELDS = ("index", "document_id", "document_title", "chunk_id", "page", "score", "text")


def message_snapshot(message: Message) -> dict | None:
    """A finished message with its units and citations as plain data, for `message_from_snapshot` in the web
    process (which then renders it without reading it back); None when it is too large to send that way."""
    snapshot = {
        **{name: getattr(message, name) for name in SNAPSHOT_FIELDS},
        "units": [{name: getattr(unit, name) for name in UNIT_FIELDS} for unit in message.units.all()],
        "citations": [{name: getattr(c, name) for name in CITATION_FIELDS} for c in message.citations.all()],
    }
    size = len(json.dumps(snapshot, ensure_ascii=False, default=str))
    return snapshot if size <= MESSAGE_SNAPSHOT_MAX_BYTES else None


def message_from_snapshot(snapshot: dict) -> Message:
    """The message of `message_snapshot` (not saved, its units and citations in place of a query)."""
    message = Message(**{name: snapshot[name] for name in SNAPSHOT_FIELDS})
    message._prefetched_objects_cache = {
        "units": [MessageUnit(message=message, **unit) for unit in snapshot["units"]],
        "citations": [Citation(message=message, **citation) for citation in snapshot["citations"]],
    }
    return message


def conversation_title_ensure(*, conversation_id: str, provider_id: int | None = None) -> str:
    """After the first exchange: a short title from the chat model (the provider `provider_id`, else the
    tenant's default), falling back to the first words. "" when the conversation has a title already (or is
    gone): the model is not asked then."""
    first = (
        Message.objects.filter(conversation_id=conversation_id, conversation__title="", role=Message.Role.USER)
        .order_by("created_at")
        .values_list("content", flat=True)
        .first()
    )
    if first is None:
        return ""
    title = " ".join(first.split()[:8])[:80]  # unless the model suggests a better one
    # as the runs find theirs: cached in this process while the tenant's providers are unchanged (no query, and no
    # key to decrypt, per title)
    configs = chat_provider_configs({provider_id} if provider_id else set())
    config = configs.get(str(provider_id)) or configs.get("default")
    if config is not None:
        try:
            completion = chat_complete(
                config,
                messages=[{"role": "system", "content": TITLE_PROMPT}, {"role": "user", "content": first[:2000]}],
                max_tokens=20,
                temperature=0.2,
            )
            suggestion = completion_text(completion).strip().strip('"').splitlines()
            if suggestion and 2 <= len(suggestion[0]) <= 80:
                title = suggestion[0]
        except Exception as exc:  # the fallback title is fine; log why
            logger.info("title generation failed for %s: %s", conversation_id, type(exc).__name__)
    if not Conversation.objects.filter(pk=conversation_id, title="").update(title=title):
        return ""  # titled meanwhile (renamed by its user)
    return title


def conversation_notify(*, conversation_id: str, payload: dict) -> None:
    """Tell the conversation's open pages something changed (message done, title set)."""
    group_send_sync(
        conversation_group_name(connection.schema_name, conversation_id), {"type": "chat.notice", "payload": payload}
    )


def turn_attachments_read(*, message: Message) -> bool:
    """Worker side, before the agent runs: read the conversation's attachments still waiting (announcing each
    one's state to the conversation's pages) and give the run the history with their text. Returns whether
    there were any."""
    from conversations.attachments import attachment_read, attachment_state
    from conversations.models import Attachment

    pending = list(
        Attachment.objects.filter(
            message__conversation_id=message.conversation_id, status=Attachment.Status.PENDING
        ).select_related("file")
    )
    for attachment in pending:
        attachment = attachment_read(attachment)
        conversation_notify(conversation_id=str(message.conversation_id), payload=attachment_state(attachment))
    if pending and message.run_id:
        AgentRun.objects.filter(pk=message.run_id).update(input=conversation_history(message.conversation))
    return bool(pending)
