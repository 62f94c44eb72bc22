from __future__ import annotations

import uuid
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet

from agents.models import Agent
from conversations.models import Conversation, Message


def agents_published() -> QuerySet[Agent]:
    return Agent.objects.filter(published_version__isnull=False).select_related("published_version").order_by("name")


def agent_knowledge_base_slugs(agent: Agent) -> list[str]:
    """The knowledge bases the agent's published version searches (its own knowledge_search tools)."""
    version = agent.published_version
    tools = version.spec.get("tools", []) if version else []
    return sorted(
        {
            slug
            for tool in tools
            if tool.get("tool") == "knowledge_search"
            for slug in (tool.get("config") or {}).get("knowledge_bases", [])
        }
    )


def agents_documents_being_indexed(agents: list[Agent]) -> dict[int, int]:
    """Per agent (by pk, published version loaded), how many documents of the knowledge bases it searches cannot
    be found yet because they are still being indexed. One query for all of them."""
    from knowledge.selectors import documents_being_indexed

    searched = {agent.pk: agent_knowledge_base_slugs(agent) for agent in agents}
    counts = documents_being_indexed(knowledge_base_slugs=sorted({s for slugs in searched.values() for s in slugs}))
    return {pk: sum(counts.get(slug, 0) for slug in slugs) for pk, slugs in searched.items()}


def conversation_get_for_user(*, conversation_id: Any, user: Any) -> Conversation | None:
    """The user's own conversation, or None for anything else (missing, another user's, malformed id)."""
    try:
        uuid.UUID(str(conversation_id))
    except ValueError:
        return None
    if not getattr(user, "is_authenticated", False):
        return None
    return Conversation.objects.select_related("agent").filter(pk=conversation_id, user=user).first()


def conversations_for_user(*, user: Any, query: str = "", archived: bool = False) -> QuerySet[Conversation]:
    """The user's conversations, newest first; `query` matches titles and message text."""
    conversations = Conversation.objects.filter(user=user, archived=archived).select_related("agent")
    query = query.strip()
    if query:
        matching = Message.objects.filter(conversation=OuterRef("pk"), content__icontains=query)
        conversations = conversations.filter(Q(title__icontains=query) | Exists(matching))
    return conversations.order_by("-updated_at")


def message_get_for_user(*, message_id: Any, user: Any) -> Message | None:
    try:
        message_id = int(message_id)
    except (TypeError, ValueError):
        return None
    return Message.objects.select_related("conversation", "run").filter(pk=message_id, conversation__user=user).first()


def messages_of_conversation(*, conversation: Conversation) -> QuerySet[Message]:
    """The conversation's messages, oldest first, with their units, citations and attachments fetched in
    a fixed number of queries."""
    return (
        Message.objects.filter(conversation=conversation)
        .prefetch_related("units", "citations", "attachments__file")
        .order_by("created_at", "id")
    )


def message_get_in_conversation(*, conversation: Conversation, message_id: Any) -> Message | None:
    """A message of this conversation (already checked to be the caller's), or None for any other id."""
    try:
        message_id = int(message_id)
    except (TypeError, ValueError):
        return None
    if not 0 < message_id < 2**63:
        return None
    return messages_of_conversation(conversation=conversation).filter(pk=message_id).first()
