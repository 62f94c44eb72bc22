"""Where run events go: a per-run Redis stream (for late joiners and reconnects) and the run's
channel-layer group (for live subscribers). Keys and group names carry the tenant's schema."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import redis
from channels.layers import get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from agents.runtime.events import TERMINAL_EVENT
from nexent_site.redis_pool import redis_client


def run_stream_key(schema_name: str, run_id: str) -> str:
    return f"nexent:{schema_name}:run:{run_id}:events"


def run_cancel_key(schema_name: str, run_id: str) -> str:
    return f"nexent:{schema_name}:run:{run_id}:cancel"


def run_group_name(schema_name: str, run_id: str) -> str:
    return f"run.{schema_name}.{str(run_id).replace('-', '')}"


def group_message(group: str, message: dict) -> tuple[str, bytes]:
    """The Redis channel and payload by which the channel layer delivers `message` to `group`'s consumers.

    channels-redis's pub/sub layer (CHANNEL_LAYERS) sends a group message as one PUBLISH of the serialized
    message on "<prefix>__group__<group>" (`RedisPubSubLoopLayer.group_send`). Sent from synchronous code with
    our own Redis client, in the same script as the run stream's XADD (RunEventPublisher), it costs one round
    trip and needs no event loop: the worker used to hand every event to a loop thread and wait for it, a
    hand-off that queued on the GIL behind the worker's other threads."""
    layer = get_channel_layer()
    if not isinstance(layer, RedisPubSubChannelLayer):
        raise ImproperlyConfigured("CHANNEL_LAYERS must use channels_redis.pubsub.RedisPubSubChannelLayer")
    return f"{settings.CHANNEL_LAYERS['default']['CONFIG']['prefix']}__group__{group}", layer.serialize(message)


def group_send_sync(group: str, message: dict) -> None:
    """`channel_layer.group_send` for synchronous code (workers, services)."""
    channel, payload = group_message(group, message)
    redis_client().publish(channel, payload)


# One run event: appended to the run's stream (with the stream's expiry when due), sent to the run's group, and
# whether the watched key (the run's cancel flag) exists, in one command. A pipeline of the same three or four
# commands cost the worker about twice the CPU (redis-py packs each command and parses each reply in Python: a
# third of a chat turn's CPU went to publishing its events). An event the stream refuses (its number already
# taken) is not sent either.
_PUBLISH = """
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[2], 'event', ARGV[3])
if ARGV[4] ~= '0' then
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
if #KEYS > 1 then
  return redis.call('EXISTS', KEYS[2])
end
return 0
"""


# A run's last events (its error and usage, then `run_finished`) in one command, after its end is stored, with the
# removal of the key that said a worker was executing it (KEYS[2]): they were a round trip each.
_PUBLISH_CLOSING = """
redis.call('DEL', KEYS[2])
for i = 4, #ARGV, 3 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[i], 'event', ARGV[i + 1])
  redis.call('PUBLISH', ARGV[3], ARGV[i + 2])
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 0
"""


class RunEventPublisher:
    """Appends each event to the run's Redis stream and sends it to the run's group, in one round trip: the
    event is in the stream before any consumer receives it. With a `watch_key` (the run's cancel flag), the
    same round trip also tells whether that key exists (`watched_key_exists`)."""

    EXPIRY_REFRESH_S = 60  # the stream's expiry is set again at most this often, and with the last event
    MAX_LEN = 50_000

    def __init__(self, schema_name: str, run_id: str, watch_key: str | None = None) -> None:
        self.stream_key = run_stream_key(schema_name, run_id)
        self.group = run_group_name(schema_name, run_id)
        # one connection of the process's pool for the publisher's life (a run's): taking one from the pool for
        # every event cost a third of the publish (redis-py asks the socket whether it has unread data each time)
        self.redis = redis.Redis(connection_pool=redis_client().connection_pool, single_connection_client=True)
        self.watch_key = watch_key
        self.watched_key_exists = False
        self._expiry_due = 0.0
        self._keys = [self.stream_key, watch_key] if watch_key else [self.stream_key]
        self._script = self.redis.register_script(_PUBLISH)
        self._closing_script = self.redis.register_script(_PUBLISH_CLOSING)

    def publish(self, event: dict) -> None:
        channel, payload = group_message(self.group, {"type": "run.event", "event": event})
        now = time.monotonic()
        expiry = 0
        if now >= self._expiry_due or event["type"] == TERMINAL_EVENT:
            expiry = settings.RUN_EVENTS_TTL_S
            self._expiry_due = now + self.EXPIRY_REFRESH_S
        args = [self.MAX_LEN, f"{event['seq']}-1", json.dumps(event), expiry, channel, payload]
        exists = self._script(keys=self._keys, args=args)
        if self.watch_key:
            self.watched_key_exists = bool(exists)

    def publish_closing(self, events: list[dict], *, delete_key: str) -> None:
        """The run's last `events`, in order, in one round trip that also deletes `delete_key`. An event the stream
        refuses stops the rest, as `publish` would (the key is deleted first)."""
        channel, each = "", []
        for event in events:
            channel, payload = group_message(self.group, {"type": "run.event", "event": event})  # the same channel
            each += [f"{event['seq']}-1", json.dumps(event), payload]
        args = [self.MAX_LEN, settings.RUN_EVENTS_TTL_S, channel, *each]
        self._closing_script(keys=[self.stream_key, delete_key], args=args)

    def last_seq(self) -> int:
        """The seq of the last event in the run's stream (0: none, or expired)."""
        entries = self.redis.xrevrange(self.stream_key, count=1)
        return int(entries[0][0].split(b"-")[0]) if entries else 0

    def close(self) -> None:
        """Give the connection back to the pool."""
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
