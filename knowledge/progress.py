"""Live document progress: each change of a document's stage or progress goes to its knowledge base's
channel-layer group, keyed by tenant, for the admin's and the chat pages' progress bars."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import connection, transaction

from agents.runtime.streams import group_send_sync

logger = logging.getLogger(__name__)


def knowledge_base_group(schema_name: str, kb_id: int) -> str:
    return f"kb.{schema_name}.{int(kb_id)}"


def document_state(document: Any) -> dict[str, Any]:
    return {
        "id": document.pk,
        "knowledge_base": document.knowledge_base_id,
        "title": document.title,
        "status": document.status,
        "status_label": str(document.get_status_display()),
        "progress": document.progress,
        "error": document.error,
        "pages": document.pages,
        "chunk_count": document.chunk_count,
        # Lets a page drop a frame older than the state it already shows (snapshot vs. late frame).
        "updated": max(t.timestamp() for t in (document.updated_at, document.heartbeat_at) if t is not None)
        if (document.updated_at or document.heartbeat_at)
        else 0,
    }


def document_progress_publish(document: Any) -> None:
    """Sends the document's state as it is now, once the current transaction (if any) commits. Best effort:
    a lost frame is repaired by the next one, or by the page reloading."""
    group = knowledge_base_group(connection.schema_name, document.knowledge_base_id)
    message = {"type": "document.progress", "document": document_state(document)}

    def send() -> None:
        try:
            group_send_sync(group, message)
        except Exception:
            logger.warning("could not publish progress of document %s", document.pk, exc_info=True)

    transaction.on_commit(send)


class Throttle:
    """True at most every `interval` seconds (and always the first time)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last = 0.0

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            return True
        return False
