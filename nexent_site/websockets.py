"""Shared websocket behaviour for our consumers."""

import json
from typing import Any


class LenientJsonMixin:
    """For AsyncJsonWebsocketConsumer: a frame that is not JSON reaches `receive_json` as None, so the
    consumer answers it with an error frame instead of the connection failing."""

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        try:
            return json.loads(text_data)
        except ValueError:
            return None
