from django.db import migrations, models


def mark_conversations_with_files(apps, schema_editor):
    Conversation = apps.get_model("conversations", "Conversation")
    Conversation.objects.filter(messages__attachments__isnull=False).update(has_attachments=True)


class Migration(migrations.Migration):
    dependencies = [("conversations", "0002_attachment")]

    operations = [
        migrations.AddField(
            model_name="conversation",
            name="has_attachments",
            field=models.BooleanField(default=False, editable=False),
        ),
        migrations.RunPython(mark_conversations_with_files, migrations.RunPython.noop),
    ]
