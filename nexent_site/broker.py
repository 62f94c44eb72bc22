"""Celery's broker transport: kombu's Redis transport, keeping one Redis client per channel and handing each
delivered task to the worker before recording it as unacknowledged.

kombu's Redis channel builds a new `redis.Redis` object for every publish, every delivery (recording the
message as unacknowledged) and every acknowledgement. The connections come from the channel's pool either
way; what is new each time is the client object, and redis-py fills its table of 160-odd response callbacks
anew for each one (redis/redis-py#3624). In the worker's consumer loop that was about a fifth of the loop's
CPU time, on the path of every chat turn from the web's enqueue to the worker's start.

A delivered message is recorded as unacknowledged in Redis (kombu's `unacked` hash and index, from which it
comes back after the visibility timeout if its worker dies) by a round trip of the consumer's thread. kombu makes
that round trip before handing the message to Celery, so every task waited for it, and under load for the
consumer's thread to get the GIL back afterwards. Here the message is handed over first and recorded right after,
in the same callback of the consumer's loop: the task's thread starts while the record is being written. What a
crash can lose is unchanged: the message is out of the queue and only in this process's memory from the moment it
is read until the record is written, as before. Acknowledgements are made by the same loop later (Celery's
`call_soon_ack`), so the record is written before it is removed; one refused at once (an unknown task) is not
recorded at all.

Used for `redis://` and `rediss://` brokers (settings.CELERY_BROKER_TRANSPORT); other brokers get kombu's own
transport.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual


class QoS(kombu_redis.QoS):
    """kombu's Redis QoS, with the unacknowledged record of a delivery written by `record_delivered`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unrecorded: list[tuple[Any, str]] = []

    def append(self, message: Any, delivery_tag: str) -> None:
        virtual.QoS.append(self, message, delivery_tag)  # this process's bookkeeping now (prefetch, restore)
        self._unrecorded.append((message, delivery_tag))

    def record_delivered(self) -> None:
        """Write the unacknowledged record of the messages appended since the last call, except those acknowledged
        or rejected meanwhile (their record would bring them back after the visibility timeout)."""
        pending, self._unrecorded = self._unrecorded, []
        for message, delivery_tag in pending:
            if delivery_tag not in self._dirty and delivery_tag in self._delivered:
                kombu_redis.QoS.append(self, message, delivery_tag)


class Channel(kombu_redis.Channel):
    QoS = QoS
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        pool = self.pool  # a new one after a fork or a reconnection: then a new client too
        client = self._sync_client
        if client is None or client.connection_pool is not pool:
            client = self._sync_client = super()._create_client()
        return client

    def basic_consume(self, queue: str, *args: Any, **kwargs: Any) -> Any:
        result = super().basic_consume(queue, *args, **kwargs)
        deliver: Callable[[Any], Any] = self.connection._callbacks[queue]

        def deliver_then_record(raw_message: Any) -> Any:
            try:
                return deliver(raw_message)  # appends to the QoS, then hands the message to Celery
            finally:
                self._record_delivered()

        self.connection._callbacks[queue] = deliver_then_record
        return result

    def basic_get(self, queue: str, no_ack: bool = False, **kwargs: Any) -> Any:
        message = super().basic_get(queue, no_ack=no_ack, **kwargs)
        self._record_delivered()  # the caller has not seen it yet: recorded before it is returned
        return message

    def _record_delivered(self) -> None:
        if isinstance(self.qos, QoS):  # not kombu's plain QoS (a transport without acknowledgement emulation)
            self.qos.record_delivered()


class Transport(kombu_redis.Transport):
    Channel = Channel
