from celery import shared_task

from agents.services.runs import run_execute
from conversations.models import Message
from conversations.services import (
    conversation_notify,
    conversation_title_ensure,
    message_finalize,
    message_mark_streaming,
    turn_attachments_read,
)


@shared_task(name="conversations.tasks.chat_turn_execute", acks_late=True)
def chat_turn_execute(message_id: int) -> str | None:
    """Run the agent for a pending assistant message, then write the message from the run. Safe to
    deliver twice: the run executes once, and finalizing is idempotent."""
    message = Message.objects.select_related("conversation").filter(pk=message_id).first()
    if message is None or message.run_id is None:
        return None
    message_mark_streaming(message=message)
    turn_attachments_read(message=message)
    run_execute(run_id=str(message.run_id))
    message = message_finalize(message=Message.objects.get(pk=message_id))
    conversation = message.conversation
    conversation_notify(
        conversation_id=str(conversation.pk),
        payload={
            "type": "message_done",
            "message_id": message.pk,
            "status": message.status,
            "run_id": str(message.run_id),
        },
    )
    if message.status == Message.Status.COMPLETED and not conversation.title:
        title = conversation_title_ensure(conversation=conversation)
        conversation_notify(conversation_id=str(conversation.pk), payload={"type": "title", "title": title})
    return message.status
