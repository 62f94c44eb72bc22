"""Celery's broker transport: kombu's Redis transport, keeping one Redis client per channel.

kombu's Redis channel builds a new `redis.Redis` object for every publish, every delivery (recording the
message as unacknowledged) and every acknowledgement. The connections come from the channel's pool either
way; what is new each time is the client object, and redis-py fills its table of 160-odd response callbacks
anew for each one (redis/redis-py#3624). In the worker's consumer loop that was about a fifth of the loop's
CPU time, on the path of every chat turn from the web's enqueue to the worker's start.

Used for `redis://` and `rediss://` brokers (settings.CELERY_BROKER_TRANSPORT); other brokers get kombu's own
transport.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool  # a new one after a fork or a reconnection: then a new client too
        client = self._sync_client
        if client is None or client.connection_pool is not pool:
            client = self._sync_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel
