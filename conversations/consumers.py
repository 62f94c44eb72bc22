"""`/ws/chat/<conversation_id>/`: the chat page's live channel.

Frames accepted:
  {"type": "send", "content": "…"}                 a new user message (starts the agent's run)
  {"type": "stop"}                                   stop the answer being written
  {"type": "regenerate", "message_id": 12}           answer the last message again
  {"type": "resume", "run_id": "…", "after": 17}     events of a run of *this* conversation after seq 17
Frames sent: `message_created`, the run's events (docs/events.md), `message_done` (with the stored
message rendered as HTML), `title`, and `error` with a code and a message.
"""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string
from django.utils import translation

from agents.relay import RunRelayMixin
from conversations.models import Message
from conversations.selectors import conversation_get_for_user, message_get_for_user
from conversations.services import (
    conversation_group_name,
    conversation_message_send,
    message_from_snapshot,
    message_regenerate,
    message_stop,
)
from nexent_site.errors import ApplicationError
from nexent_site.tenancy import run_in_tenant
from nexent_site.websockets import JsonConsumer, scope_language

WS_CLOSE_UNAUTHENTICATED = 4401
WS_CLOSE_NOT_FOUND = 4404


class ChatConsumer(RunRelayMixin, JsonConsumer):
    async def connect(self) -> None:
        self.user, self.tenant = self.scope["user"], self.scope["tenant"]
        self.language = scope_language(self.scope)  # of the pages this socket updates
        if not self.user.is_authenticated:
            await self.close(code=WS_CLOSE_UNAUTHENTICATED)
            return
        conversation_id = self.scope["url_route"]["kwargs"]["conversation_id"]
        self.conversation = await run_in_tenant(
            self.tenant, conversation_get_for_user, conversation_id=conversation_id, user=self.user
        )
        if self.conversation is None:
            await self.close(code=WS_CLOSE_NOT_FOUND)
            return
        self.group = conversation_group_name(self.tenant.schema_name, str(self.conversation.pk))
        self.done_sent: set[int] = set()  # the messages this socket has had `message_done` for
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if getattr(self, "group", None):
            await self.channel_layer.group_discard(self.group, self.channel_name)
        await self.leave_runs()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        handler = {"send": self._send, "stop": self._stop, "regenerate": self._regenerate, "resume": self._resume}.get(
            kind
        )
        if handler is None:
            await self._error("bad_frame", "Unknown frame; expected send, stop, regenerate or resume.")
            return
        try:
            await handler(content)
        except ApplicationError as exc:
            await self._error(exc.code, exc.message)

    async def _error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})

    async def _send(self, frame: dict) -> None:
        text = frame.get("content")
        if not isinstance(text, str):
            raise ApplicationError("A message needs text content.", code="bad_frame")
        user_message, assistant = await run_in_tenant(
            self.tenant, conversation_message_send, conversation=self.conversation, user=self.user, content=text
        )
        await self._announce(user_message, assistant)

    async def _regenerate(self, frame: dict) -> None:
        message = await run_in_tenant(self.tenant, self._own_message, frame.get("message_id"))
        assistant = await run_in_tenant(self.tenant, message_regenerate, message=message, user=self.user)
        await self._announce(None, assistant)

    async def _announce(self, user_message: Message | None, assistant: Message) -> None:
        await self.send_json(
            {
                "type": "message_created",
                "user_message": {"id": user_message.pk, "content": user_message.content} if user_message else None,
                "assistant_message_id": assistant.pk,
                "run_id": str(assistant.run_id),
            }
        )
        await self.relay_run(self.tenant.schema_name, str(assistant.run_id))

    async def _stop(self, frame: dict) -> None:
        def stop_active() -> int:
            active = self.conversation.messages.filter(status__in=Message.ACTIVE_STATUSES).select_related(
                "conversation", "run"
            )
            for message in active:
                message_stop(message=message)
            return len(active)

        if not await run_in_tenant(self.tenant, stop_active):
            await self._error("nothing_to_stop", "No answer is being written.")

    async def _resume(self, frame: dict) -> None:
        run_id, after = frame.get("run_id"), frame.get("after", 0)
        if not isinstance(after, int) or after < 0:
            raise ApplicationError("`after` must be a sequence number.", code="bad_frame")
        belongs = await run_in_tenant(
            self.tenant, lambda: self.conversation.messages.filter(run_id=run_id).exists() if run_id else False
        )
        if not belongs:  # a forged or foreign run id: nothing about it is revealed
            raise ApplicationError("No such run in this conversation.", code="not_found")
        await self.relay_run(self.tenant.schema_name, str(run_id), after)
        if self.run_relayed_to_end(str(run_id)):
            # The run ended, maybe before this socket joined the conversation's group (a page loaded or reconnected
            # just then): its `message_done` went to the pages open at the time. This page gets the stored answer
            # too, or it would wait for it with its stop button showing.
            done = await run_in_tenant(self.tenant, self._message_done_for_run, str(run_id))
            if done is not None:
                await self._send_done(done)

    def _own_message(self, message_id: Any) -> Message:
        message = message_get_for_user(message_id=message_id, user=self.user)
        if message is None or message.conversation_id != self.conversation.pk:
            raise ApplicationError("No such message in this conversation.", code="not_found")
        return message

    async def _send_done(self, payload: dict) -> None:
        """A `message_done` frame, once per message and socket (the group's and a resume's may both come)."""
        if payload["message_id"] in self.done_sent:
            return
        self.done_sent.add(payload["message_id"])
        await self.send_json(payload)

    def _message_done_for_run(self, run_id: str) -> dict | None:
        """The `message_done` frame of this conversation's answer written by `run_id`, if it is written."""
        message = (
            self.conversation.messages.filter(run_id=run_id)
            .exclude(status__in=Message.ACTIVE_STATUSES)
            .prefetch_related("units", "citations")
            .first()
        )
        if message is None:
            return None
        return {
            "type": "message_done",
            "message_id": message.pk,
            "status": message.status,
            "run_id": run_id,
            "html": self._render(message),
        }

    async def chat_notice(self, event: dict) -> None:
        payload = dict(event["payload"])
        if payload.get("type") == "message_done":
            if payload["message_id"] in self.done_sent:
                return
            run_id = payload.get("run_id")
            if run_id and run_id in getattr(self, "_run_seqs", {}) and not self.run_relayed_to_end(run_id):
                # whatever of the run the channel layer may have dropped comes first, from the stream
                await self.relay_run(self.tenant.schema_name, run_id)
            snapshot = payload.pop("message", None)
            if snapshot is not None:
                payload["html"] = self._render(message_from_snapshot(snapshot))
            else:
                payload["html"] = await run_in_tenant(self.tenant, self._render_message, payload["message_id"])
            await self._send_done(payload)
            return
        await self.send_json(payload)

    def _render_message(self, message_id: int) -> str:
        """The finished answer as the page shows it, in the page's language (answers have no attachments: those
        are the user's). Rendered without a request: the page gives its forms their CSRF token."""
        message = Message.objects.prefetch_related("units", "citations").filter(pk=message_id).first()
        return self._render(message) if message else ""

    def _render(self, message: Message) -> str:
        with translation.override(self.language):
            return render_to_string("conversations/_message.html", {"message": message})
