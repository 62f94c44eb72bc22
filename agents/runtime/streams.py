"""Where run events go: a per-run Redis stream (for late joiners and reconnects) and the run's
channel-layer group (for live subscribers). Keys and group names carry the tenant's schema."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator

from channels.layers import get_channel_layer
from django.conf import settings

from agents.runtime.events import TERMINAL_EVENT
from nexent_site.redis_pool import redis_client


def run_stream_key(schema_name: str, run_id: str) -> str:
    return f"nexent:{schema_name}:run:{run_id}:events"


def run_cancel_key(schema_name: str, run_id: str) -> str:
    return f"nexent:{schema_name}:run:{run_id}:cancel"


def run_group_name(schema_name: str, run_id: str) -> str:
    return f"run.{schema_name}.{str(run_id).replace('-', '')}"


class _LayerSender:
    """One event loop per worker process, in its own thread, for every group_send of the process.

    `async_to_sync(group_send)` from a worker thread starts a new loop, and channels-redis a new
    connection pool, for every single event; this keeps one of each alive."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._pid = 0

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._pid != os.getpid():  # a forked child needs its own loop
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="channel-layer-sender", daemon=True).start()
                self._loop, self._pid = loop, os.getpid()
            return self._loop

    def group_send(self, group: str, message: dict, timeout: float = 10) -> None:
        layer = get_channel_layer()
        asyncio.run_coroutine_threadsafe(layer.group_send(group, message), self._ensure_loop()).result(timeout)


layer_sender = _LayerSender()


class RunEventPublisher:
    """Appends each event to the run's Redis stream, then sends it to the run's group."""

    def __init__(self, schema_name: str, run_id: str) -> None:
        self.stream_key = run_stream_key(schema_name, run_id)
        self.group = run_group_name(schema_name, run_id)
        self.redis = redis_client()

    def publish(self, event: dict) -> None:
        pipe = self.redis.pipeline()
        pipe.xadd(
            self.stream_key, {"event": json.dumps(event)}, id=f"{event['seq']}-1", maxlen=50_000, approximate=True
        )
        pipe.expire(self.stream_key, settings.RUN_EVENTS_TTL_S)
        pipe.execute()
        layer_sender.group_send(self.group, {"type": "run.event", "event": event})

    def close(self) -> None:
        self.redis.close()


def run_events_since(schema_name: str, run_id: str, after_seq: int = 0) -> list[dict]:
    """The stored events with seq > after_seq, in order (empty once the stream expired)."""
    client = redis_client()
    try:
        entries = client.xrange(run_stream_key(schema_name, run_id), min=f"({after_seq}-1", max="+")
    finally:
        client.close()
    return [json.loads(fields[b"event"]) for _, fields in entries]


def run_events_follow(schema_name: str, run_id: str, after_seq: int = 0, timeout_s: float = 600) -> Iterator[dict]:
    """Yield events after `after_seq` as they arrive, until the run's last event (blocking reads)."""
    import time

    client = redis_client()
    key = run_stream_key(schema_name, run_id)
    last_id = f"{after_seq}-1"
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            response = client.xread({key: last_id}, block=1000, count=100)
            for _, entries in response or []:
                for entry_id, fields in entries:
                    last_id = entry_id.decode()
                    event = json.loads(fields[b"event"])
                    yield event
                    if event["type"] == TERMINAL_EVENT:
                        return
    finally:
        client.close()
    raise TimeoutError(f"no end of run {run_id} within {timeout_s:.0f}s")
