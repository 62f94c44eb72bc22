"""`/ws/runs/<run_id>/?after=<seq>`: a run's events, live, resuming after the last sequence number seen.

Frames sent: the protocol's events (docs/events.md); `{"type": "error", "code", "message"}` for bad frames.
Frames accepted: `{"type": "stop"}` cancels the run.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from agents.relay import RunRelayMixin
from agents.selectors import run_get_for_user
from agents.services.runs import run_cancel
from nexent_site.tenancy import run_in_tenant
from nexent_site.websockets import JsonConsumer

WS_CLOSE_UNAUTHENTICATED = 4401
WS_CLOSE_NOT_FOUND = 4404


class RunEventsConsumer(RunRelayMixin, JsonConsumer):
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
            after = max(int(query.get("after", ["0"])[0]), 0)
        except ValueError:
            after = 0
        await self.accept()
        backlog = await self.relay_run(self.tenant.schema_name, str(run.id), after)
        if not backlog and run.is_finished and after < run.last_seq:
            # The stream expired: the stored run is the source of truth.
            await self._relay_event(
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
        await self.leave_runs()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "stop":
            await run_in_tenant(self.tenant, self._cancel)
            return
        await self.send_json({"type": "error", "code": "bad_frame", "message": 'expected {"type": "stop"}'})

    def _cancel(self) -> None:
        run = run_get_for_user(run_id=self.run_id, user=self.scope["user"])
        if run is not None and not run.is_finished:
            run_cancel(run=run)
