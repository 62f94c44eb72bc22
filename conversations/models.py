"""Conversations of a tenant's users with its agents: messages, their ordered units (steps, tool calls,
sub-agent output, the answer …) and their citations. All in the tenant's schema."""

import uuid

from django.conf import settings
from django.db import models


class Conversation(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations")
    agent = models.ForeignKey("agents.Agent", on_delete=models.CASCADE, related_name="conversations")
    title = models.CharField(max_length=200, blank=True)
    archived = models.BooleanField(default=False, db_index=True)
    # set with a message's first attached file: a turn of a conversation without files (most) builds the
    # agent's history without looking for any
    has_attachments = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [models.Index(fields=["user", "archived", "-updated_at"])]

    def __str__(self) -> str:
        return self.title or "New conversation"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        STREAMING = "streaming", "Streaming"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        STOPPED = "stopped", "Stopped"

    class Feedback(models.TextChoices):
        NONE = "", "—"
        LIKE = "like", "Like"
        DISLIKE = "dislike", "Dislike"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETED, db_index=True)
    error = models.TextField(blank=True)
    run = models.ForeignKey("agents.AgentRun", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    tokens_in = models.PositiveIntegerField(default=0)
    tokens_out = models.PositiveIntegerField(default=0)
    feedback = models.CharField(max_length=8, choices=Feedback.choices, blank=True, default="")
    feedback_comment = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # one answer being written at a time per conversation (conversations.services: ONE_ACTIVE_ANSWER)
            models.UniqueConstraint(
                fields=["conversation"],
                condition=models.Q(role="assistant", status__in=["pending", "streaming"]),
                name="conversations_one_active_answer",
            )
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"

    ACTIVE_STATUSES = (Status.PENDING, Status.STREAMING)  # being answered: one at a time per conversation

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE_STATUSES


class MessageUnit(models.Model):
    """One piece of an assistant message, in order: what the agent did on the way to its answer."""

    class Kind(models.TextChoices):
        THINKING = "thinking", "Thinking"
        STEP = "step", "Step"
        TOOL_CALL = "tool_call", "Tool call"
        TOOL_RESULT = "tool_result", "Tool result"
        SUBAGENT = "subagent", "Sub-agent output"
        FINAL_ANSWER = "final_answer", "Final answer"
        ERROR = "error", "Error"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="units")
    position = models.PositiveIntegerField()
    kind = models.CharField(max_length=16, choices=Kind.choices)
    data = models.JSONField(default=dict)

    class Meta:
        ordering = ["message", "position"]
        constraints = [models.UniqueConstraint(fields=["message", "position"], name="unique_unit_position")]

    def __str__(self) -> str:
        return f"{self.position}: {self.kind}"


class Citation(models.Model):
    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="citations")
    index = models.PositiveIntegerField()
    document_id = models.BigIntegerField()
    document_title = models.CharField(max_length=300, blank=True)
    chunk_id = models.BigIntegerField()
    page = models.PositiveIntegerField(null=True, blank=True)
    score = models.FloatField(default=0)
    text = models.TextField(blank=True)

    class Meta:
        ordering = ["message", "index"]

    def __str__(self) -> str:
        return f"[{self.index}] {self.document_title}"


class Attachment(models.Model):
    """A file the user attached to a message. A worker reads its text before the agent runs; the agent
    gets that text with the message."""

    class Status(models.TextChoices):
        PENDING = "pending", "Being read"
        READY = "ready", "Read"
        FAILED = "failed", "Could not be read"

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="attachments")
    file = models.ForeignKey("files.StoredFile", on_delete=models.PROTECT, related_name="attachments")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True)
    text = models.TextField(blank=True, editable=False)
    truncated = models.BooleanField(default=False, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["message", "id"]

    def __str__(self) -> str:
        return self.file.original_name
