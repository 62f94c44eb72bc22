"""Shared websocket behaviour for our consumers."""

import json
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer


class JsonConsumer(AsyncJsonWebsocketConsumer):
    """The base of our consumers.

    - A frame that is not JSON reaches `receive_json` as None, so the consumer answers it with an error frame
      instead of the connection failing.
    - Messages are dispatched without channels' `aclose_old_connections()` before each one (a round trip to a
      thread for every message: 15% of a web process's CPU while relaying token events). Our consumers never
      use the database on the event loop: every database call goes through `run_in_tenant`
      (`database_sync_to_async`), which closes stale connections in its own thread, before and after.
    """

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        try:
            return json.loads(text_data)
        except ValueError:
            return None

    async def dispatch(self, message: dict) -> None:
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)
