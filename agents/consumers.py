"""`/ws/runs/<run_id>/?after=<seq>`: a run's events, live, resuming after the last sequence number seen.

Frames sent: the protocol's events (docs/events.md); `{"type": "error", "code", "message"}` for bad frames.
Frames accepted: `{"type": "stop"}` cancels the run.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from agents.runtime.streams import run_events_since, run_group_name
from agents.selectors import run_get_for_user
from agents.services.runs import run_cancel
from nexent_site.tenancy import run_in_tenant

WS_CLOSE_UNAUTHENTICATED = 4401
WS_CLOSE_NOT_FOUND = 4404


class RunEventsConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        user, self.tenant = self.scope["user"], self.scope["tenant"]
        if not user.is_authenticated:
            await self.close(code=WS_CLOSE_UNAUTHENTICATED)
            return
        self.run_id = self.scope["url_route"]["kwargs"]["run_id"]
        run = await run_in_tenant(self.tenant, run_get_for_user, run_id=self.run_id, user=user)
        if run is None:
            await self.close(code=WS_CLOSE_NOT_FOUND)
            return
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            self.last_seq = max(int(query.get("after", ["0"])[0]), 0)
        except ValueError:
            self.last_seq = 0
        # Join first, then replay: anything published meanwhile waits in the group and is de-duplicated by seq.
        self.group = run_group_name(self.tenant.schema_name, str(run.id))
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        backlog = await database_sync_to_async(run_events_since)(self.tenant.schema_name, str(run.id), self.last_seq)
        for event in backlog:
            await self._relay(event)
        if not backlog and run.is_finished and self.last_seq < run.last_seq:
            # The stream expired: the stored run is the source of truth.
            await self._relay(
                {
                    "type": "run_finished",
                    "run_id": str(run.id),
                    "seq": run.last_seq,
                    "agent": "",
                    "data": {
                        "status": run.status,
                        "error": run.error,
                        "duration_ms": run.duration_ms,
                        "output": run.output,
                    },
                }
            )

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def _relay(self, event: dict) -> None:
        if event["seq"] <= self.last_seq:
            return
        self.last_seq = event["seq"]
        await self.send_json(event)

    async def run_event(self, message: dict) -> None:
        await self._relay(message["event"])

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "stop":
            await run_in_tenant(self.tenant, self._cancel)
            return
        await self.send_json({"type": "error", "code": "bad_frame", "message": 'expected {"type": "stop"}'})

    def _cancel(self) -> None:
        run = run_get_for_user(run_id=self.run_id, user=self.scope["user"])
        if run is not None and not run.is_finished:
            run_cancel(run=run)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        import json

        try:
            return json.loads(text_data)
        except ValueError:
            return None
