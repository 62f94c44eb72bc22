"""`/ws/knowledge/<kb_id>/`: live ingestion progress of a knowledge base's documents, for staff.

Frames sent: `{"type": "snapshot", "documents": [...]}` on connect, then `{"type": "document", "document":
{...}}` for every change (see knowledge.progress.document_state). The group is keyed by the tenant's
schema, so a knowledge base id of another tenant reaches nothing.
"""

from __future__ import annotations

from typing import Any

from knowledge.progress import knowledge_base_group
from knowledge.selectors import knowledge_base_documents_state, knowledge_base_get_for_staff
from nexent_site.tenancy import run_in_tenant
from nexent_site.websockets import JsonConsumer

WS_CLOSE_FORBIDDEN = 4403


class KnowledgeProgressConsumer(JsonConsumer):
    group: str | None = None

    async def connect(self) -> None:
        self.tenant = self.scope["tenant"]
        kb_id = self.scope["url_route"]["kwargs"]["kb_id"]
        kb = await run_in_tenant(self.tenant, knowledge_base_get_for_staff, kb_id=kb_id, user=self.scope["user"])
        if kb is None:
            await self.close(code=WS_CLOSE_FORBIDDEN)
            return
        self.group = knowledge_base_group(self.tenant.schema_name, kb.pk)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        documents = await run_in_tenant(self.tenant, knowledge_base_documents_state, knowledge_base=kb)
        await self.send_json({"type": "snapshot", "documents": documents})

    async def disconnect(self, code: int) -> None:
        if self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.send_json({"type": "error", "code": "bad_frame", "message": "this socket only sends"})

    async def document_progress(self, message: dict) -> None:
        await self.send_json({"type": "document", "document": message["document"]})
