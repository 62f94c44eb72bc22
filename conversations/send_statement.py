"""A chat turn's send in one statement, for a conversation whose agent's published version this process knows.

The common send (no files) reads the conversation, its agent's published version and its messages, then writes the
run and both messages (`conversations.services`): two round trips before the worker is told, each of which waits
for a CPU under load. When the process already knows the agent's published version (versions never change once
made; the agent may move to another one), one statement does both: it writes the run, with the conversation's
history computed in PostgreSQL from its stored messages, and the two messages, **only if** the conversation is as a
new turn needs it (the user's, not archived, without files, no answer being written) and its agent is still on that
version (the same id, number and spec: a schema made anew under the same name starts its ids again, and its
version 1 must not pass for the one this process read). The same statement moves the conversation to the top of
its user's list (its `updated_at`), which was a statement of its own after the worker was told. It returns the
conversation's title and the run's messages. Otherwise it writes nothing, and the caller takes the reading path,
which finds the reason (a busy, archived… error) or the agent's new version.

The history and the checks are read in the statement's own snapshot, the conversation's messages in one pass on its
index: an answer finished by a worker a moment before is either seen finished (and in the history) or still being
written (nothing written; the reading path decides), never half of each.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from django.db import connection
from django.db.models import Field, Model

from agents.models import Agent, AgentRun, AgentVersion
from conversations.models import Conversation, Message
from nexent_site.statements import insert_fields, marked_saved

# (schema, agent id) -> the agent's published version as last read in this process. A stale entry costs one
# statement that writes nothing (its check fails), then the reading path, which replaces the entry.
_published: dict[tuple[str, int], AgentVersion] = {}
PUBLISHED_KEPT = 4096  # entries kept before the map starts again from empty


def published_version_remember(agent: Agent) -> None:
    """Note `agent`'s published version (loaded with it), read in the current schema."""
    version = agent.published_version
    if version is None:
        return
    if len(_published) >= PUBLISHED_KEPT:
        _published.clear()
    _published[(connection.schema_name, agent.pk)] = version


def published_version_known(agent_id: int) -> AgentVersion | None:
    """The published version of the current schema's agent `agent_id` as this process last read it, if it has."""
    return _published.get((connection.schema_name, agent_id))


def published_versions_forget() -> None:
    """Forget every version noted (the tests' databases are rolled back under it)."""
    _published.clear()


def _values(fields: list[Field], obj: Model) -> list[Any]:
    """`obj`'s values for `fields` as Django's `INSERT` prepares them (defaults and `auto_now_add` included)."""
    return [f.get_db_prep_save(f.pre_save(obj, add=True), connection) for f in fields]


# the messages' field whose value is the statement's own `conversation` parameter, not one of theirs
SHARED_FIELD = "conversation"


def _message_placeholder(row: int, index: int, field: Field) -> str:
    """The placeholder of message `row`'s value of its `index`th field (the shared field's: the statement's)."""
    return f"%({SHARED_FIELD})s" if field.name == SHARED_FIELD else f"%(m{row}_{index})s"


def _message_values(row: int, message: Message) -> dict[str, Any]:
    """Message `row`'s parameters (its conversation is the statement's `conversation`).

    The statement has at most 50 parameters and 4,096 characters, so that psycopg reuses its parse of the SQL
    (it caches only those; the parse of the statement took 0.16 ms of each send's CPU on slow vCPUs):
    `test_the_statement_is_one_psycopg_reuses` keeps it so."""
    fields = insert_fields(Message)
    return {
        f"m{row}_{i}": value
        for i, (field, value) in enumerate(zip(fields, _values(fields, message), strict=True))
        if field.name != SHARED_FIELD
    }


@functools.cache
def _statement() -> str:
    """The statement's SQL, built once per process from the models (names quoted as Django quotes them)."""
    q = connection.ops.quote_name
    run_fields, message_fields = insert_fields(AgentRun), insert_fields(Message)
    conversation, agent, version, message = (q(m._meta.db_table) for m in (Conversation, Agent, AgentVersion, Message))
    run_values = ", ".join(
        "turn.history || %(new_message)s" if f.name == "input" else f"%(r{i})s" for i, f in enumerate(run_fields)
    )
    message_columns = ", ".join(q(f.column) for f in message_fields)
    updated_at = q(Conversation._meta.get_field("updated_at").column)
    rows = ", ".join(
        "(" + ", ".join([str(j), *(_message_placeholder(j, i, f) for i, f in enumerate(message_fields))]) + ")"
        for j in range(2)
    )
    # the statuses are constants: in the SQL, not parameters (see `_message_values`)
    completed = connection.ops.compose_sql("%s", [Message.Status.COMPLETED.value])
    active = connection.ops.compose_sql("%s", [[status.value for status in Message.ACTIVE_STATUSES]])
    # the conversation moves to the top of its user's list at its new message's time
    created_at = Message._meta.get_field("created_at")
    now = _message_placeholder(0, message_fields.index(created_at), created_at)
    names = ", ".join(["ord", *(f"c{i}" for i in range(len(message_fields)))])
    return (
        # one pass over the conversation's messages (on its index): the history, and whether an answer is being written
        f"WITH messages AS ("
        f" SELECT coalesce(jsonb_agg(jsonb_build_object('role', m.role, 'content', m.content)"
        f" ORDER BY m.created_at, m.id) FILTER (WHERE m.status = {completed} AND m.content <> ''),"
        f" '[]'::jsonb) AS history,"
        f" coalesce(bool_or(m.status = ANY({active})), false) AS busy"
        f" FROM {message} m WHERE m.conversation_id = %(conversation)s"
        f"), turn AS ("
        f" SELECT c.title, messages.history FROM {conversation} c JOIN {agent} a ON a.id = c.agent_id"
        f" JOIN {version} v ON v.id = a.published_version_id, messages"
        f" WHERE c.id = %(conversation)s AND c.user_id = %(user)s"
        f" AND v.id = %(version)s AND v.number = %(number)s AND v.spec = %(spec)s"
        f" AND NOT c.archived AND NOT c.has_attachments AND NOT messages.busy"
        f"), new_run AS ("
        f" INSERT INTO {q(AgentRun._meta.db_table)} ({', '.join(q(f.column) for f in run_fields)})"
        f" SELECT {run_values} FROM turn RETURNING {q(AgentRun._meta.get_field('input').column)}"
        f"), new_messages AS ("
        f" INSERT INTO {message} ({message_columns})"
        f" SELECT {', '.join(f'v.c{i}' for i in range(len(message_fields)))}"
        f" FROM new_run, (VALUES {rows}) AS v ({names}) ORDER BY v.ord RETURNING id"
        f"), touched AS ("
        f" UPDATE {conversation} SET {updated_at} = {now}"
        f" WHERE id = %(conversation)s AND {updated_at} < {now} AND EXISTS (SELECT 1 FROM new_run)"
        f") SELECT (SELECT title FROM turn), new_run.input, ARRAY(SELECT id FROM new_messages ORDER BY id) FROM new_run"
    )


def turn_send_checked(
    *, run: AgentRun, user_message: Message, assistant: Message, user_id: int, version: AgentVersion
) -> tuple[bool, list[dict]] | None:
    """Write `run` (its `input` the new user message alone: the history is put before it) and the turn's two
    messages, if their conversation is as a new turn needs it (see the module). Returns whether the conversation
    has a title and the run's messages as written, with the objects marked saved; None when nothing was written.
    A second answer started at the same moment: IntegrityError (the one-active-answer constraint)."""
    conversation_id = user_message.conversation_id
    params: dict[str, Any] = {
        "conversation": conversation_id,
        "user": user_id,
        "version": version.pk,
        "number": version.number,
        "spec": AgentVersion._meta.get_field("spec").get_db_prep_save(version.spec, connection),
        "new_message": AgentRun._meta.get_field("input").get_db_prep_save(run.input, connection),
    }
    params.update((f"r{i}", value) for i, value in enumerate(_values(insert_fields(AgentRun), run)))
    for j, message in enumerate((user_message, assistant)):
        params.update(_message_values(j, message))
    with connection.prepared_cursor() as cursor:  # parsed and planned once per connection (nexent_site.db_backend)
        cursor.execute(_statement(), params)
        row = cursor.fetchone()
    if row is None:
        return None
    title, messages, ids = row
    marked_saved([run, user_message, assistant], [run.pk, *ids])
    return bool(title), json.loads(messages) if isinstance(messages, str) else messages
