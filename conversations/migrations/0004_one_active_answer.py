from django.db import migrations, models


def close_extra_active_answers(apps, schema_editor):
    """Before the constraint: in a conversation with more than one answer still being written (which the send's
    lock kept from happening), every one but the newest is marked failed."""
    Message = apps.get_model("conversations", "Message")
    seen = set()
    active = Message.objects.filter(role="assistant", status__in=["pending", "streaming"]).order_by(
        "conversation_id", "-created_at", "-id"
    )
    for message in active.only("id", "conversation_id"):
        if message.conversation_id in seen:
            Message.objects.filter(pk=message.pk).update(status="failed", error="closed: a newer answer was started")
        seen.add(message.conversation_id)


class Migration(migrations.Migration):
    dependencies = [("conversations", "0003_conversation_has_attachments")]

    operations = [
        migrations.RunPython(close_extra_active_answers, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="message",
            constraint=models.UniqueConstraint(
                condition=models.Q(("role", "assistant"), ("status__in", ["pending", "streaming"])),
                fields=("conversation",),
                name="conversations_one_active_answer",
            ),
        ),
    ]
