from typing import Any

from nexent_site.websockets import JsonConsumer


class SessionStatusConsumer(JsonConsumer):
    """`/ws/status/`: tells a page which tenant and user its socket belongs to, and answers pings.

    Pages use it to check that live updates work before they depend on them.
    """

    async def connect(self) -> None:
        await self.accept()
        user = self.scope["user"]
        tenant = self.scope["tenant"]
        await self.send_json(
            {
                "type": "session",
                "tenant": tenant.schema_name,
                "user": user.email if user.is_authenticated else None,
                "role": getattr(user, "role", None) if user.is_authenticated else None,
            }
        )

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if isinstance(content, dict) and content.get("type") == "ping":
            await self.send_json({"type": "pong"})
        else:
            await self.send_json({"type": "error", "code": "bad_frame", "message": 'expected {"type": "ping"}'})
