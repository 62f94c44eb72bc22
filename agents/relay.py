"""Relaying a run's events to clients, in one place. Websockets: join the run's group, replay what the Redis
stream already holds after the client's last sequence number, then pass live events on — each exactly
once, in order. Used by the run consumer (playground) and the chat consumer."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing

import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from django.conf import settings

from agents.runtime.events import TERMINAL_EVENT
from agents.runtime.streams import run_events_since, run_group_name, run_stream_key


class RunRelayMixin:
    """For JsonConsumer subclasses. Call `relay_run` for each run the client follows."""

    async def relay_run(self, schema_name: str, run_id: str, after: int = 0) -> list[dict]:
        if not hasattr(self, "_run_seqs"):
            self._run_seqs: dict[str, int] = {}
            self._run_groups: set[str] = set()
            self._runs_relayed_to_end: set[str] = set()
        run_id = str(run_id)
        self._relay_schema = schema_name
        self._run_seqs[run_id] = max(self._run_seqs.get(run_id, 0), after)
        group = run_group_name(schema_name, run_id)
        if group not in self._run_groups:
            # Join first, then replay: events published meanwhile wait in the group and are de-duplicated.
            await self.channel_layer.group_add(group, self.channel_name)
            self._run_groups.add(group)
        backlog = await database_sync_to_async(run_events_since)(schema_name, run_id, self._run_seqs[run_id])
        for event in backlog:
            await self._relay_event(event)
        return backlog

    async def _relay_event(self, event: dict) -> None:
        run_id = event["run_id"]
        last = self._run_seqs.get(run_id, 0)
        if event["seq"] <= last:
            return
        if event["seq"] > last + 1 and getattr(self, "_relay_schema", None):
            # The channel layer lost something (Redis pub/sub delivers nothing to a subscriber connection while
            # it is dropped and re-established): fill the gap from the run's Redis stream, so the client still
            # sees every event once.
            missing = await database_sync_to_async(run_events_since)(self._relay_schema, run_id, last)
            for earlier in missing:
                if earlier["seq"] >= event["seq"]:
                    break
                self._run_seqs[run_id] = earlier["seq"]
                await self.send_json(earlier)
        self._run_seqs[run_id] = event["seq"]
        await self.send_json(event)
        if event["type"] == TERMINAL_EVENT:
            # nothing of this run comes after it: stop listening (a socket can follow hundreds of turns)
            self._runs_relayed_to_end.add(run_id)
            group = run_group_name(getattr(self, "_relay_schema", ""), run_id)
            if group in self._run_groups:
                self._run_groups.discard(group)
                await self.channel_layer.group_discard(group, self.channel_name)

    def run_relayed_to_end(self, run_id: str) -> bool:
        """Whether this client has had every event of the run, its last included."""
        return run_id in getattr(self, "_runs_relayed_to_end", ())

    async def run_event(self, message: dict) -> None:
        """Channel-layer handler for the events the worker sends to a run's group."""
        await self._relay_event(message["event"])

    async def leave_runs(self) -> None:
        for group in getattr(self, "_run_groups", set()):
            await self.channel_layer.group_discard(group, self.channel_name)


async def run_events_live(
    schema_name: str, run_id: str, after: int = 0, idle_s: float = 15
) -> AsyncIterator[dict | None]:
    """Every event after `after` from the run's Redis stream, live, until `run_finished` (inclusive); None
    after each `idle_s` without an event, so a caller can keep its connection alive or give up. Holds no
    thread while waiting. Close it (`contextlib.aclosing`) when stopping early."""
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    key = run_stream_key(schema_name, run_id)
    last_id = f"{after}-1"
    try:
        while True:
            response = await client.xread({key: last_id}, block=int(idle_s * 1000), count=200)
            if not response:
                yield None
                continue
            for _, entries in response:
                for entry_id, fields in entries:
                    last_id = entry_id.decode()
                    event = json.loads(fields[b"event"])
                    yield event
                    if event["type"] == TERMINAL_EVENT:
                        return
    finally:
        await client.aclose()


async def run_events_sse(
    schema_name: str, run_id: str, after: int = 0, keepalive_s: float = 15
) -> AsyncIterator[bytes]:
    """The same relay as server-sent events (for the REST API and plain-HTTP clients): every event after
    `after` from the run's Redis stream, live, until `run_finished`; a comment line keeps idle connections
    open. Each event carries `id: <seq>`, so a client reconnecting with Last-Event-ID resumes exactly."""
    async with aclosing(run_events_live(schema_name, run_id, after, keepalive_s)) as events:
        async for event in events:
            yield b": keep-alive\n\n" if event is None else sse_format(event)


def sse_format(event: dict) -> bytes:
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event, ensure_ascii=False)}\n\n".encode()
