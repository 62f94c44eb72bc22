"""The Celery broker transport (nexent_site/broker.py) against the real Redis."""

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
