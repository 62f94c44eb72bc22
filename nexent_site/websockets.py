"""Shared websocket behaviour for our consumers."""

import json
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.http import HttpRequest
from django.utils.translation import get_language_from_request


def scope_language(scope: dict) -> str:
    """The language LocaleMiddleware would pick for this connection's pages: the language cookie (set by the
    language switcher), else Accept-Language, else LANGUAGE_CODE."""
    request = HttpRequest()
    request.COOKIES = scope.get("cookies") or {}
    for name, value in scope.get("headers") or []:
        if name == b"accept-language":
            request.META["HTTP_ACCEPT_LANGUAGE"] = value.decode("latin-1")
    return get_language_from_request(request)


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
