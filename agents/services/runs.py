"""Agent runs: start (enqueue), execute (in a Celery worker), cancel, and the watchdog.

What callers may rely on:
- a run is executed at most once; a run whose worker died is marked failed, never left "running" (at its task's
  next delivery, see agents.runtime.liveness, or by the watchdog);
- every run ends with a `run_finished` event, after which the stored AgentRun is the source of truth;
- `seq` increases by one per event, and the events are in the run's Redis stream for reconnects; the
  stored steps (RunStep, every event but text deltas) are written in batches, at most STEP_FLUSH_S behind
  the stream once a step worth reading while the run goes on is among them (a tool call or result, a
  sub-agent's step, an error: not the run's start or a step's start alone, which tell nothing the run's
  row does not, nor the final answer alone, which the run's end writes a moment later), all of them but
  `run_finished` before the run's row says it finished, and that one with it.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable
from contextlib import suppress
from datetime import timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from agents.models import Agent, AgentRun, McpServer, RunStatus, RunStep
from agents.runtime.engine import Engine, RunFailed, RunNotClaimed, RunStopped
from agents.runtime.events import STORED_EVENT_TYPES, EventType, make_event
from agents.runtime.limits import ProviderSlot, provider_slots_key, slots_try_acquire_all, tenant_runs_slots_key
from agents.runtime.liveness import run_alive_forget, run_alive_start, run_is_alive
from agents.runtime.streams import RunEventPublisher, redis_client, run_cancel_key, run_events_since
from agents.runtime.waiters import run_waiting_add, run_waiting_next, run_waiting_remove
from agents.services.agents import agent_spec_build
from agents.services.mcp import mcp_server_as_dict
from agents.services.providers import chat_provider_configs
from agents.services.usage import usage_quota_check, usage_record_sql, usage_recorded
from agents.tools import RunContext
from nexent_site.errors import ApplicationError
from nexent_site.integrations.openai_compat import ProviderConfig
from nexent_site.statements import Statement, insert_sql, marked_saved, update_sql

logger = logging.getLogger(__name__)
QUEUE_ALLOWANCE_S = 600  # how long a run may wait for a worker before the watchdog gives up on it
CANCEL_CHECK_INTERVAL_S = 0.2
# Stored steps are written in batches, off the path to the model's first token; a live reader gets events
# from the run's Redis stream, the steps are its durable trace.
STEP_FLUSH_S = 1.0
# Steps that are no output of the run's yet (the message is not "streaming" for them)
QUIET_STEP_TYPES = {EventType.RUN_STARTED, EventType.STEP_STARTED}
# Steps that, alone, wait for the next flush: a chat-mode answer's steps are all written with its end. The final
# answer is the agent's last step, and the run's end (usage, run_finished) follows it at once: written alone it
# was one INSERT more per run, a few milliseconds before the end's own.
UNFLUSHED_STEP_TYPES = QUIET_STEP_TYPES | {EventType.FINAL_ANSWER}
ROLES = ("system", "user", "assistant")


class RunMustWait(Exception):
    """The run may not start yet: its tenant has its `max_concurrent_runs` executing, or a provider it uses has
    every slot taken (its `max_concurrency`). Nothing was claimed or published: the run stays queued and its
    task is to be tried again later (`retry_in_s`), without holding a worker thread meanwhile. A run that waited in
    its thread instead let one tenant whose provider is saturated fill every worker thread with runs waiting
    for it, and every other tenant's turns then waited in the queue behind them. `slots_key`: the slots it
    waits for (see run_wait_for_slot)."""

    def __init__(self, message: str, slots_key: str) -> None:
        super().__init__(message)
        self.slots_key = slots_key

    def retry_in_s(self, retries: int) -> float:
        """When to try again after `retries` tries: RUN_SLOT_RETRY_S, doubled three times at most, ± half so that
        waiting runs do not all come back together. A try costs the worker a few milliseconds of CPU (Celery's
        retry and delivery, the run's load, the providers' query): a long backlog is polled less often."""
        return settings.RUN_SLOT_RETRY_S * 2 ** min(retries, 3) * random.uniform(0.5, 1.5)


RUN_OVERRIDES = ("temperature", "max_tokens")


def messages_validate(messages: Any) -> list[dict]:
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, list) or not messages:
        raise ValidationError({"messages": ["Give at least one message."]})
    cleaned = []
    for index, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise ValidationError(
                {"messages": [f"Message {index} needs a role ({', '.join(ROLES)}) and text content."]}
            )
        cleaned.append({"role": message["role"], "content": message["content"]})
    if cleaned[-1]["role"] != "user" or not cleaned[-1]["content"].strip():
        raise ValidationError({"messages": ["The last message must be a non-empty user message."]})
    return cleaned


def run_start(
    *,
    agent: Agent,
    messages: Any,
    trigger: str,
    user_email: str = "",
    draft: bool = False,
    enqueue: bool = True,
    api_key: Any = None,
    end_user: str = "",
    overrides: dict | None = None,
) -> AgentRun:
    """Create a queued run of the agent's published version (or of its draft, for the playground) and
    enqueue it once the transaction commits. `enqueue=False` leaves that to the caller (a chat turn runs
    the run inside its own task). `overrides` may set the run's `temperature` and `max_tokens`. Refused
    with QuotaExceeded when the month's token budget (the organisation's or the API key's) is used up."""
    run = run_prepare(
        agent=agent,
        messages=messages,
        trigger=trigger,
        user_email=user_email,
        draft=draft,
        api_key=api_key,
        end_user=end_user,
        overrides=overrides,
    )
    run.save(force_insert=True)
    if not enqueue:
        return run
    from agents.tasks import agent_run_execute

    timeout = run.spec["run_timeout_s"]
    handoff = run_handoff(run)  # the worker starts the run without reading it first
    transaction.on_commit(
        lambda: agent_run_execute.apply_async(
            args=[str(run.id)],
            kwargs={"run": handoff} if handoff else {},
            kwargsrepr="{…}" if handoff else None,  # the run's messages stay out of logs and events
            soft_time_limit=timeout + 15,
            time_limit=timeout + 45,
        )
    )
    return run


def run_prepare(
    *,
    agent: Agent,
    messages: Any,
    trigger: str,
    user_email: str = "",
    draft: bool = False,
    api_key: Any = None,
    end_user: str = "",
    overrides: dict | None = None,
) -> AgentRun:
    """The queued run `run_start` creates, checked (messages, quota, published version) but not saved yet: for a
    caller that writes it with other rows in one statement (a chat turn, conversations.services)."""
    messages = messages_validate(messages)
    usage_quota_check(api_key=api_key)
    if draft:
        version, spec = None, agent_spec_build(agent)
    else:
        version = agent.published_version
        if version is None:
            raise ApplicationError(
                f"Agent “{agent.slug}” has no published version yet.", code="not_published", status=409
            )
        spec = {**version.spec, "version": version.number}  # run_started names it without loading the version
    if overrides:
        chosen = {k: v for k, v in overrides.items() if k in RUN_OVERRIDES and v is not None}
        if chosen.get("max_tokens") and spec.get("max_tokens"):  # the agent's limit is a ceiling
            chosen["max_tokens"] = min(chosen["max_tokens"], spec["max_tokens"])
        spec = {**spec, **chosen}
    now = timezone.now()
    return AgentRun(
        agent=agent,
        version=version,
        spec=spec,
        trigger=trigger,
        input=messages,
        user_email=user_email,
        api_key=api_key,
        end_user=end_user[:200],
        deadline_at=now + timedelta(seconds=spec["run_timeout_s"] + QUEUE_ALLOWANCE_S),
    )


HANDOFF_MAX_CHARS = 64_000  # a run's messages longer than this are read by its worker, not sent in its task


def run_handoff(run: AgentRun) -> dict | None:
    """What a worker needs of the just-saved queued `run` to start it without reading it first (see
    `run_execute`'s `read`), for its task's message; None when its messages are too long to send that way."""
    if sum(len(str(m.get("content") or "")) for m in run.input) > HANDOFF_MAX_CHARS:
        return None
    return {"id": str(run.pk), "spec": run.spec, "input": run.input}


def run_from_handoff(handoff: Any, run_id: str | None = None) -> AgentRun | None:
    """The queued run `run_handoff` described, as a stand-in until `run_execute` claims it and fills it from its
    row; None when `handoff` is not one (malformed, or naming another run than `run_id`): then the run is read."""
    try:
        pk, spec, messages = uuid.UUID(str(handoff["id"])), handoff["spec"], handoff["input"]
    except (TypeError, KeyError, ValueError):
        return None
    if not isinstance(spec, dict) or not isinstance(messages, list) or (run_id is not None and str(pk) != run_id):
        return None
    run = AgentRun(id=pk, spec=spec, input=messages, status=RunStatus.QUEUED)
    run._state.adding = False
    return run


def run_cancel(*, run: AgentRun) -> AgentRun:
    """Ask the run to stop. A queued run is cancelled at once; a running one stops at its next event and
    keeps its partial output; a running one whose worker died (see `_close_orphaned`) is closed at once, with the
    answer it had streamed: no worker is left to see the request."""
    client = redis_client()
    try:
        client.set(run_cancel_key(connection.schema_name, str(run.id)), "1", ex=24 * 3600)
    finally:
        client.close()
    if AgentRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
        status=RunStatus.CANCELLED, error="cancelled before it started", finished_at=timezone.now()
    ):
        run_waiting_remove(connection.schema_name, str(run.id))  # not woken in the place of a run still waiting
        _publish_finished(run, RunStatus.CANCELLED, "cancelled before it started")
        run.refresh_from_db()
    else:
        run.refresh_from_db()
        # written on `run` too when it closes it
        _close_orphaned(run, RunStatus.CANCELLED, "stopped on request (the worker running it had stopped)")
    return run


ORPHANED_ERROR = "the worker running this run stopped unexpectedly; start it again"


def _close_orphaned(run: AgentRun, status: str, error: str) -> bool:
    """Close `run` with `status` if it is running but its worker died: no liveness key (agents.runtime.liveness),
    and started longer ago than the key lives (a run claimed a moment ago may not have its key yet). Its output
    is what it had streamed: the final answer if it got that far, else the text of its last step. Only one
    closer wins (a stop and the task's redelivery may meet here); it gives back the slots the run held. Returns
    whether this call closed it."""
    if run.status != RunStatus.RUNNING or run_is_alive(connection.schema_name, str(run.id)):
        return False
    if run.started_at and run.started_at > timezone.now() - timedelta(seconds=settings.RUN_ALIVE_TTL_S):
        return False
    output = _streamed_output(run_events_since(connection.schema_name, str(run.id)))
    finished_at = timezone.now()
    if not AgentRun.objects.filter(pk=run.pk, status=RunStatus.RUNNING).update(
        status=status, error=error, output=output, finished_at=finished_at
    ):
        return False
    run.status, run.error, run.output, run.finished_at = status, error, output, finished_at
    _publish_finished(run, status, error)
    _free_dead_runs_slots(run)
    return True


def _streamed_output(events: list[dict]) -> str:
    """The answer a run had given in `events` (its stream) when its worker died."""
    text: list[str] = []
    for event in events:
        if event.get("agent"):  # a sub-agent's
            continue
        if event["type"] == EventType.FINAL_ANSWER:
            return str(event["data"].get("text") or "")
        if event["type"] == EventType.STEP_STARTED:
            text = []
        elif event["type"] == EventType.TEXT_DELTA:
            text.append(str(event["data"].get("text") or ""))
    return "".join(text)


def _publish_finished(run: AgentRun, status: str, error: str) -> None:
    """For runs ended outside the worker (cancelled while queued, watchdog): the closing event."""
    publisher = RunEventPublisher(connection.schema_name, str(run.id))
    try:
        run.refresh_from_db(fields=["last_seq"])
        # a run whose worker died has published more than its row says (written when a run ends)
        seq = max(run.last_seq, publisher.last_seq()) + 1
        AgentRun.objects.filter(pk=run.pk).update(last_seq=seq)
        data = {"status": str(status), "error": error, "duration_ms": run.duration_ms}
        publisher.publish(make_event(EventType.RUN_FINISHED, run_id=str(run.id), seq=seq, data=data))
        RunStep.objects.create(run=run, seq=seq, type=EventType.RUN_FINISHED, data=data)
    finally:
        publisher.close()


def _providers_for(spec: dict) -> dict[str, ProviderConfig]:
    """The chat providers the spec names, and the tenant's default one as "default" (cached per process)."""
    ids: set[int] = set()

    def walk(node: dict) -> None:
        if node.get("provider_id"):
            ids.add(node["provider_id"])
        for child in node.get("sub_agents", []):
            walk(child)

    walk(spec)
    return chat_provider_configs(ids)


def _used_provider_keys(spec: dict) -> set[str]:
    keys = {str(spec.get("provider_id") or "default")}
    for child in spec.get("sub_agents", []):
        keys |= _used_provider_keys(child)
    return keys


def _mcp_servers_for(spec: dict) -> dict[str, dict]:
    ids: set[int] = set()

    def walk(node: dict) -> None:
        ids.update(t["server_id"] for t in node.get("tools", []) if t["tool"] == "mcp")
        for child in node.get("sub_agents", []):
            walk(child)

    walk(spec)
    if not ids:  # most agents: not even an empty query to compile
        return {}
    return {str(s.pk): mcp_server_as_dict(s) for s in McpServer.objects.filter(pk__in=ids)}


class _RunRecorder:
    """Numbers, publishes and stores the events of one run; tells the engine when to stop."""

    def __init__(self, run: AgentRun, on_first_output: Callable[[], None] | None = None) -> None:
        self.run = run
        self.on_first_output = on_first_output
        self.schema = connection.schema_name
        # every publish also asks whether the run was cancelled, in the same round trip
        self.publisher = RunEventPublisher(self.schema, str(run.id), watch_key=run_cancel_key(self.schema, str(run.id)))
        self.redis = redis_client()
        self.seq = run.last_seq
        self.started = time.monotonic()
        self.deadline = self.started + run.spec["run_timeout_s"]
        self.first_token_ms: int | None = None
        self._next_cancel_check = 0.0
        self.stopping = True  # no stop checks until the run is under way
        self._steps: list[RunStep] = []
        self.written: list[RunStep] = []  # every step stored so far, in order
        self._flush_at = self.started + STEP_FLUSH_S

    def check_stop(self) -> None:
        now = time.monotonic()
        if now > self.deadline:
            raise RunStopped(RunStatus.TIMED_OUT, f"the run exceeded its {self.run.spec['run_timeout_s']} s limit")
        if self.publisher.watched_key_exists:  # seen by the last publish
            raise RunStopped(RunStatus.CANCELLED, "stopped on request")
        if now >= self._next_cancel_check:  # nothing published lately to see it by
            self._next_cancel_check = now + CANCEL_CHECK_INTERVAL_S
            if self.redis.exists(run_cancel_key(self.schema, str(self.run.id))):
                raise RunStopped(RunStatus.CANCELLED, "stopped on request")

    def emit(self, event_type: EventType, data: dict, agent: str = "") -> None:
        if not self.stopping:
            self.check_stop()
        self.seq += 1
        event = make_event(event_type, run_id=str(self.run.id), seq=self.seq, data=data, agent=agent)
        if event_type is EventType.TEXT_DELTA and self.first_token_ms is None:
            self.first_token_ms = int((time.monotonic() - self.started) * 1000)
        self.publisher.publish(event)
        if self.on_first_output is not None and not self.stopping and event_type not in QUIET_STEP_TYPES:
            on_first_output, self.on_first_output = self.on_first_output, None
            on_first_output()  # after the publish: off the path to the first token
        self._next_cancel_check = time.monotonic() + CANCEL_CHECK_INTERVAL_S
        if event_type in STORED_EVENT_TYPES:
            self._steps.append(RunStep(run=self.run, seq=self.seq, type=event_type, agent_path=agent, data=data))
        if self._steps and time.monotonic() >= self._flush_at and self._steps_worth_writing():
            self.flush()

    def _steps_worth_writing(self) -> bool:
        """Whether a buffered step is one worth writing before the run ends."""
        return any(step.type not in UNFLUSHED_STEP_TYPES for step in self._steps)

    def stored_event(self, event_type: EventType, data: dict) -> dict:
        """The next event, numbered and its step buffered for the next flush, but not published yet."""
        self.seq += 1
        self._steps.append(RunStep(run=self.run, seq=self.seq, type=event_type, data=data))
        return make_event(event_type, run_id=str(self.run.id), seq=self.seq, data=data)

    def flush(self) -> None:
        """Write the stored steps emitted since the last flush, in one statement: one round trip (`bulk_create`
        would wrap it in a transaction of its own, two more)."""
        steps = self.steps_take()
        if steps:
            sql, params = insert_sql(RunStep, steps, returning=True)
            with connection.prepared_cursor(at_once=False) as cursor:  # as the run's end (nexent_site.statements)
                cursor.execute(sql, params)
                marked_saved(steps, [row[0] for row in cursor.fetchall()])

    def steps_take(self) -> list[RunStep]:
        """The stored steps emitted since the last flush, for the caller to write now (counted as written)."""
        steps, self._steps = self._steps, []
        self._flush_at = time.monotonic() + STEP_FLUSH_S
        self.written.extend(steps)
        return steps

    def close(self) -> None:
        self.publisher.close()
        self.redis.close()


def run_execute(
    *,
    run_id: str,
    run: AgentRun | None = None,
    on_first_output: Callable[[], None] | None = None,
    on_finish: Callable[[AgentRun, Statement], None] | None = None,
    waited: bool = False,
    read: bool = True,
) -> AgentRun | None:
    """Execute a queued run in this worker. Safe to call twice: only a queued run is executed. `run` may be
    given already loaded (with its agent and version); it is claimed the same way. `on_first_output` is called
    once the run's first output (a text delta, a tool call, an error…) is published, if it gets that far.
    `on_finish` is called with the finished run (its steps at hand) and the statement that will store the run's
    end (`nexent_site.statements.Statement`), before `run_finished` is published: the parts it adds are stored
    with the run's end, or neither is. Not called when this call did not execute the run.

    `read=False`: `run` was built from its task's message (`run_from_handoff`), not read from the database. Its
    row is read with its claim, in one statement, when the run is announced: a chat agent's once its model
    request is out, so that neither round trip is on the way to the first token. Should the run turn out not to
    be queued any more (a second delivery, a stop while it waited), its model request is dropped unanswered and
    nothing is published.

    Raises RunMustWait, before anything is claimed or published, when the tenant has its most runs executing or
    a provider the run uses has no free slot: the caller's task is to be tried again later (see agents.tasks).
    `waited`: this is such a later try (then the run leaves the line of runs waiting for a slot, once started)."""
    if run is None:
        run = AgentRun.objects.select_related("agent", "version").filter(pk=run_id).first()
    if run is None:
        logger.warning("run %s does not exist in schema %s", run_id, connection.schema_name)
        return None
    slots: list[ProviderSlot] = []
    providers: dict[str, ProviderConfig] = {}
    providers_error: Exception | None = None
    if run.status == RunStatus.QUEUED:
        try:
            providers = _providers_for(run.spec)
        except Exception as exc:  # the run fails with it, once claimed
            providers_error = exc
        else:
            slots = _take_run_slots(run, providers)  # or RunMustWait: tried again later
    started_at = timezone.now()
    deadline_at = started_at + timedelta(seconds=run.spec["run_timeout_s"])
    claimed = False
    if read:
        try:
            claimed = _run_claim(run, started_at, deadline_at, read=False)
        except BaseException:
            _release(slots)
            raise
        if not claimed:
            _release(slots)
            return _run_not_claimed(run)

    recorder = _RunRecorder(run, on_first_output)
    context = RunContext(schema_name=recorder.schema, run_id=str(run.id))
    engine: Engine | None = None
    status, error = RunStatus.SUCCEEDED, ""
    announced = refused = False
    claim_failure: list[Exception] = []

    def announce() -> None:
        """The run claimed if it is not yet, marked alive and `run_started` published (by the engine, as soon as
        it may: a chat agent's once its model call is out). RunNotClaimed when the run is not queued any more."""
        nonlocal announced, claimed, refused
        if not claimed:
            try:
                claimed = _run_claim(run, started_at, deadline_at, read=True)
            except Exception as exc:  # raised again once the engine has let go of the run
                claim_failure.append(exc)
                refused = True
                raise RunNotClaimed from exc
            if not claimed:
                refused = True
                raise RunNotClaimed
        announced = True
        run_alive_start(connection.schema_name, str(run.id))
        if waited:
            run_waiting_remove(connection.schema_name, str(run.id))
        recorder.emit(
            EventType.RUN_STARTED,
            {
                "agent": run.spec.get("slug") or run.agent.slug,  # the spec's: no query when the agent is not loaded
                "version": run.spec.get("version") or (run.version.number if run.version_id else None),
                "mode": run.spec["mode"],
                "trigger": run.trigger,
            },
        )
        recorder.stopping = False
        recorder.check_stop()

    try:
        if providers_error is not None:
            announce()
            raise providers_error
        engine = Engine(
            spec=run.spec,
            messages=run.input,
            providers=providers,
            mcp_servers=_mcp_servers_for(run.spec),
            context=context,
            emit=recorder.emit,
            text_delta_interval_s=settings.RUN_TEXT_DELTA_INTERVAL_MS / 1000,
            on_start=announce,
        )
        engine.run()
    except RunNotClaimed:
        pass  # nothing was published: left as it is, below
    except RunStopped as stop:
        status, error = stop.status, stop.message
    except RunFailed as failure:
        status, error = RunStatus.FAILED, failure.message
    except SoftTimeLimitExceeded:
        status, error = RunStatus.TIMED_OUT, f"the run exceeded its {run.spec['run_timeout_s']} s limit"
    except Exception as exc:
        logger.exception("run %s failed", run.id)
        status, error = RunStatus.FAILED, f"{type(exc).__name__}: {str(exc)[:500]}"
    finally:
        if not announced and not refused:
            # failed before (its spec's MCP servers, say): its events still begin with run_started (a run claimed
            # late is claimed here, or found not queued: RunNotClaimed is a RunStopped)
            with suppress(RunStopped):
                announce()
        _release(slots)
        if claimed:
            _wake_waiters(slots)
            _run_close(run, recorder, engine, status, error, on_finish)
        else:
            recorder.close()
    if claim_failure:
        raise claim_failure[0]
    return run if claimed else _run_not_claimed(run)


def _run_claim(run: AgentRun, started_at: Any, deadline_at: Any, *, read: bool) -> bool:
    """Mark the queued run running, in one conditional `UPDATE`; whether it was still queued. `read`: the run
    was not read from the database, and its row comes back with the claim (`RETURNING`) to fill it."""
    if not read:
        claimed = AgentRun.objects.filter(pk=run.pk, status=RunStatus.QUEUED).update(
            status=RunStatus.RUNNING, started_at=started_at, deadline_at=deadline_at
        )
        if claimed:
            run.status, run.started_at, run.deadline_at = RunStatus.RUNNING, started_at, deadline_at
        return bool(claimed)
    table, status = connection.ops.quote_name(AgentRun._meta.db_table), connection.ops.quote_name("status")
    rows = list(
        AgentRun.objects.raw(
            f"UPDATE {table} SET {status} = %s, started_at = %s, deadline_at = %s WHERE id = %s AND {status} = %s "
            "RETURNING *",
            [RunStatus.RUNNING, started_at, deadline_at, run.pk, RunStatus.QUEUED],
        )
    )
    if rows:  # the claimed row, its new status included
        for field in AgentRun._meta.concrete_fields:
            setattr(run, field.attname, getattr(rows[0], field.attname))
    return bool(rows)


def _run_not_claimed(run: AgentRun) -> AgentRun | None:
    """A run this worker found not queued any more, as it is now (None: there is no such run in this schema).
    Redelivered after the worker executing it died: agent runs are not replayed (tools may have side effects), the
    run is closed with the reason instead. (Redelivered while its worker is still on it, after the broker's
    visibility timeout: left to that worker.)"""
    try:
        run.refresh_from_db()
    except AgentRun.DoesNotExist:
        logger.warning("run %s does not exist in schema %s", run.pk, connection.schema_name)
        return None
    _close_orphaned(run, RunStatus.FAILED, ORPHANED_ERROR)
    return run


def _run_close(
    run: AgentRun,
    recorder: _RunRecorder,
    engine: Engine | None,
    status: str,
    error: str,
    on_finish: Callable[[AgentRun, Statement], None] | None,
) -> None:
    """The end of a run this worker executed: its error and usage events, then its final row, steps and usage in
    one statement (with `on_finish`'s writes), then `run_finished`."""
    recorder.stopping = True
    result = engine.result if engine else None
    if result:
        run.output, run.tokens_in, run.tokens_out = result.output, result.tokens_in, result.tokens_out
        run.usage_estimated = result.usage_estimated
    try:
        # the run's last events: numbered and stored with its end, published once it is stored
        closing = []
        if status != RunStatus.SUCCEEDED:
            closing.append(
                recorder.stored_event(EventType.ERROR, {"message": error, "code": str(status), "fatal": True})
            )
        closing.append(
            recorder.stored_event(
                EventType.USAGE,
                {"tokens_in": run.tokens_in, "tokens_out": run.tokens_out, "estimated": run.usage_estimated},
            )
        )
        run.ttft_ms = recorder.first_token_ms
        run.duration_ms = int((time.monotonic() - recorder.started) * 1000)
        finished = recorder.stored_event(
            EventType.RUN_FINISHED, {"status": str(status), "error": error, "duration_ms": run.duration_ms}
        )
        run.last_seq = finished["seq"]
        end = Statement()  # every step, the closing one's included, with the run's final row and usage
        _run_end_parts(end, run, recorder.steps_take(), status, error)
        # what is being written, as if prefetched: `run.steps.all()` needs no query (the chat turn reads them)
        run._prefetched_objects_cache = {**getattr(run, "_prefetched_objects_cache", {}), "steps": recorder.written}
        if on_finish is not None:
            on_finish(run, end)
        end.execute()
        # after the end is stored (a client that sees `run_finished` finds the run and its steps), in one round
        # trip with the liveness key's removal (its row says it ended: a delivery from now on leaves it)
        alive_key = run_alive_forget(recorder.schema, str(run.id))
        recorder.publisher.publish_closing([*closing, finished], delete_key=alive_key)
    finally:
        recorder.close()


def _take_run_slots(run: AgentRun, providers: dict[str, ProviderConfig]) -> list[ProviderSlot]:
    """A place among the tenant's `max_concurrent_runs` and a slot of every provider the run uses (each at most
    `max_concurrency` runs at once), across every worker; or RunMustWait with none kept: a run never holds one
    slot while it waits for another."""
    wanted = _run_slots(run, providers)
    slots = [slot for _, slot in wanted]
    full = slots_try_acquire_all(slots)
    if full is not None:
        what = next(what for what, slot in wanted if slot is full)
        raise RunMustWait(f"{what}: all {full.limit} in use", full.key)
    return slots


def _run_slots(run: AgentRun, providers: dict[str, ProviderConfig]) -> list[tuple[str, ProviderSlot]]:
    """The slots a run takes (not taken yet), each with what it is a slot of: the tenant's runs (when it has a
    limit) and each limited provider the run uses."""
    limits: list[tuple[str, str, int]] = []
    tenant_limit = getattr(connection.tenant, "max_concurrent_runs", 0)
    if tenant_limit:
        limits.append(("the organisation's runs", tenant_runs_slots_key(connection.schema_name), tenant_limit))
    for key in sorted(_used_provider_keys(run.spec)):
        config = providers.get(key)
        if config is None or not config.max_concurrency or config.provider_id is None:
            continue
        limits.append(
            (
                f"provider {key}",
                provider_slots_key(connection.schema_name, str(config.provider_id)),
                config.max_concurrency,
            )
        )
    ttl_s = run.spec["run_timeout_s"] + 60
    return [
        (what, ProviderSlot(redis_client(), slots_key, limit, holder=str(run.id), ttl_s=ttl_s))
        for what, slots_key, limit in limits
    ]


def _free_dead_runs_slots(run: AgentRun) -> None:
    """Give back the slots a run whose worker died still holds (they would free themselves only after the run's
    timeout and a minute), and wake the runs waiting for them."""
    try:
        slots = [slot for _, slot in _run_slots(run, _providers_for(run.spec))]
    except Exception:  # a provider gone since: its slots expire by themselves
        logger.warning("could not find the slots of run %s", run.id, exc_info=True)
        return
    _release(slots)
    _wake_waiters(slots)


def _release(slots: list[ProviderSlot]) -> None:
    for slot in slots:
        slot.release()


def run_wait_for_slot(busy: RunMustWait, *, run_id: str, task: str, args: list, since: float | None = None) -> None:
    """The run's task was refused a slot: it waits in line for one (its place kept since `since`, its first wait),
    to be sent again as soon as a run holding one ends (its own later try stays the fallback)."""
    run_waiting_add(connection.schema_name, busy.slots_key, run_id, task=task, args=args, since=since)


def _wake_waiters(slots: list[ProviderSlot]) -> None:
    """The run that held `slots` ended: the oldest run waiting for each of them is tried again now."""
    from celery import current_app

    for slot in slots:
        try:
            waiter = run_waiting_next(connection.schema_name, slot.key)
            if waiter is not None:
                current_app.send_task(waiter["task"], args=waiter["args"], kwargs={"woken_since": waiter["since"]})
        except Exception:  # the waiter's own next try still comes
            logger.warning("could not wake the run waiting for %s", slot.key, exc_info=True)


# what a run's end writes of its row
RUN_END_FIELDS = (
    "status",
    "error",
    "finished_at",
    "output",
    "tokens_in",
    "tokens_out",
    "usage_estimated",
    "ttft_ms",
    "duration_ms",
    "last_seq",
)


def _run_end_parts(statement: Statement, run: AgentRun, steps: list[RunStep], status: str, error: str) -> None:
    """The end of `run` as parts of `statement`: its last `steps`, its row's RUN_END_FIELDS (with `status`,
    `error` and the time) and its usage record (`usage_record_sql`). They were three statements in a transaction,
    each a round trip of the worker's thread that waited for a CPU and the GIL under load."""
    run.status, run.error, run.finished_at = status, error, timezone.now()
    if steps:
        statement.part("run_steps", insert_sql(RunStep, steps, returning=True))
        statement.returns("ARRAY(SELECT id FROM run_steps ORDER BY id)", lambda ids: marked_saved(steps, ids))
    statement.part("run_end", update_sql(run, RUN_END_FIELDS))
    record, usage = usage_record_sql(run=run)
    statement.part("run_usage", usage)
    statement.returns("(SELECT id FROM run_usage)", lambda pk: usage_recorded(record, pk))


def runs_watchdog() -> int:
    """Mark runs of the current tenant that outlived their deadline as failed. Returns how many."""
    cutoff = timezone.now() - timedelta(seconds=settings.RUN_WATCHDOG_GRACE_S)
    stale = list(AgentRun.objects.filter(status__in=[RunStatus.QUEUED, RunStatus.RUNNING], deadline_at__lt=cutoff))
    for run in stale:
        reason = (
            "the run was not started in time: no worker took it, or its model provider stayed at its concurrency limit"
            if run.status == RunStatus.QUEUED
            else "the run did not finish before its deadline (worker lost?)"
        )
        if AgentRun.objects.filter(pk=run.pk, status=run.status).update(
            status=RunStatus.FAILED, error=reason, finished_at=timezone.now()
        ):
            if run.status == RunStatus.QUEUED:
                run_waiting_remove(connection.schema_name, str(run.id))
            _publish_finished(run, RunStatus.FAILED, reason)
    return len(stale)
