"""Files attached to chat messages: stored with the message (refused with a clear error, and nothing
saved, when a file is empty, too large, of a type that cannot be read, or over quota), read by the worker
before the agent runs, and handed to the agent as text with the message."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.conf import settings

from conversations.models import Attachment, Message
from files.services import file_open, file_store
from knowledge.extraction import ExtractionError, extract
from nexent_site.errors import ApplicationError


def attachments_store(*, message: Message, uploads: Sequence[Any], user: Any) -> list[Attachment]:
    """Call inside the transaction that creates the message: a refused file rolls the message back too."""
    if len(uploads) > settings.CHAT_MAX_ATTACHMENTS:
        raise ApplicationError(
            f"Attach at most {settings.CHAT_MAX_ATTACHMENTS} files to one message.", code="too_many_attachments"
        )
    return [
        Attachment.objects.create(message=message, file=file_store(upload=upload, owner=user)) for upload in uploads
    ]


def attachment_read(attachment: Attachment) -> Attachment:
    """Extract the file's text (at most CHAT_ATTACHMENT_MAX_CHARS characters). A file that cannot be read
    is marked failed with the reason; the agent is told so rather than left guessing."""
    try:
        with file_open(attachment.file) as handle:
            data = handle.read()
        extracted = extract(data, content_type=attachment.file.content_type, name=attachment.file.original_name)
        text = "\n\n".join(block.text for block in extracted.blocks)
        limit = settings.CHAT_ATTACHMENT_MAX_CHARS
        attachment.text, attachment.truncated = text[:limit], len(text) > limit
        attachment.status, attachment.error = Attachment.Status.READY, ""
    except ExtractionError as exc:
        attachment.status, attachment.error = Attachment.Status.FAILED, str(exc)
    attachment.save(update_fields=["text", "truncated", "status", "error"])
    return attachment


def attachment_state(attachment: Attachment) -> dict:
    return {
        "type": "attachment",
        "id": attachment.pk,
        "message_id": attachment.message_id,
        "name": attachment.file.original_name,
        "status": attachment.status,
        "status_label": attachment.get_status_display(),
        "error": attachment.error,
    }


def message_text_for_agent(message: Message) -> str:
    """The message as the agent sees it: its text, then each attachment's text (or why it is missing)."""
    parts = [message.content] if message.content else []
    for attachment in message.attachments.all():
        name = attachment.file.original_name
        if attachment.status == Attachment.Status.READY:
            note = " (truncated)" if attachment.truncated else ""
            parts.append(f"Attached file “{name}”{note}:\n<<<\n{attachment.text}\n>>>")
        elif attachment.status == Attachment.Status.FAILED:
            parts.append(f"(The attached file “{name}” could not be read: {attachment.error})")
        else:  # replaced by the text once the worker has read it, before the agent runs
            parts.append(f"(Attached file “{name}”, not read yet.)")
    return "\n\n".join(parts)
