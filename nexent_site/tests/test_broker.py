"""The Celery broker transport (nexent_site/broker.py) against the real Redis."""

import uuid

from kombu import Consumer, Producer, Queue
from kombu.message import Message

from nexent_site.celery import app


def test_the_redis_broker_keeps_one_client_per_channel() -> None:
    """nexent_site/broker.py: kombu's Redis channel built a new redis.Redis for every publish, delivery and
    acknowledgement; ours keeps one per channel (and a new one when the channel's pool is replaced)."""
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        client = channel._create_client()
        assert type(connection.transport).__module__ == "nexent_site.broker"
        assert channel._create_client() is client
        assert client.ping()
        channel._disconnect_pools()  # after a fork or a lost connection
        assert channel._create_client() is not client
        assert channel._create_client().ping()


def test_a_delivered_task_is_handed_over_first_and_recorded_as_unacknowledged_right_after() -> None:
    """nexent_site/broker.py: the consumer's callback gets the message before its unacknowledged record (what brings
    it back after the visibility timeout if its worker dies) is written, and the record is there once the callback
    returns; acknowledging removes it. A message rejected inside the callback is never recorded."""
    queue = Queue(f"test-broker-{uuid.uuid4().hex}", auto_delete=True)
    seen: dict[str, Message] = {}
    recorded_when_handed_over: list[bool] = []

    with app.connection_for_write() as connection:
        channel = connection.channel()
        qos = channel.qos
        redis = channel._create_client()

        def recorded(message: Message) -> bool:
            return bool(redis.hexists(qos.unacked_key, message.delivery_tag))

        def on_message(message: Message) -> None:
            seen[message.payload["n"]] = message
            recorded_when_handed_over.append(recorded(message))
            if message.payload["n"] == "refused":
                message.reject()

        try:
            with Producer(channel) as producer:
                for n in ("kept", "refused"):
                    producer.publish({"n": n}, routing_key=queue.name, declare=[queue], serializer="json")
            with Consumer(channel, queues=[queue], on_message=on_message, accept=["json"]):
                while len(seen) < 2:
                    connection.drain_events(timeout=5)
            assert recorded_when_handed_over == [False, False]  # handed over before any record
            assert recorded(seen["kept"])  # written once the callback returned
            assert not recorded(seen["refused"])  # rejected inside the callback: never recorded
            seen["kept"].ack()
            assert not recorded(seen["kept"])
        finally:
            channel.queue_delete(queue.name)
            channel.close()
