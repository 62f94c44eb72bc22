"""Chat pages. They read through selectors, write through services, and work without JavaScript (forms
and redirects); the page script adds live streaming over /ws/chat/<id>/."""

from __future__ import annotations

import uuid

from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_POST

from agents.relay import run_events_sse
from conversations.models import Conversation
from conversations.selectors import (
    agents_documents_being_indexed,
    agents_published,
    conversation_get_for_user,
    conversations_for_user,
    message_get_for_user,
)
from conversations.services import (
    conversation_delete,
    conversation_message_send,
    conversation_start,
    conversation_update,
    message_feedback,
)
from nexent_site.errors import ApplicationError
from nexent_site.tenancy import run_in_tenant


def _conversation_or_404(request: HttpRequest, conversation_id: str) -> Conversation:
    conversation = conversation_get_for_user(conversation_id=conversation_id, user=request.user)
    if conversation is None:
        raise Http404("No such conversation.")
    return conversation


def _sidebar(request: HttpRequest) -> dict:
    query = request.GET.get("q", "")[:200]
    archived = request.GET.get("archived") == "1"
    return {
        "conversations": conversations_for_user(user=request.user, query=query, archived=archived)[:100],
        "query": query,
        "show_archived": archived,
    }


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    agents = list(agents_published())
    indexing = agents_documents_being_indexed(agents)
    for agent in agents:  # what each agent cannot find yet, said before anyone asks
        agent.indexing = indexing[agent.pk]
    return render(request, "conversations/home.html", {"agents": agents, **_sidebar(request)})


@login_required
@require_POST
def conversation_new(request: HttpRequest) -> HttpResponse:
    agent = get_object_or_404(agents_published(), slug=request.POST.get("agent", ""))
    try:
        conversation = conversation_start(user=request.user, agent=agent)
        first = request.POST.get("message", "").strip()
        if first:
            conversation_message_send(conversation=conversation, user=request.user, content=first)
    except ApplicationError as exc:
        flash.error(request, exc.message)
        return redirect("home")
    return redirect("chat", conversation_id=conversation.pk)


@login_required
@require_GET
def chat(request: HttpRequest, conversation_id: str) -> HttpResponse:
    conversation = _conversation_or_404(request, conversation_id)
    thread = conversation.messages.prefetch_related("units", "citations", "attachments__file").order_by(
        "created_at", "id"
    )
    active = next((m for m in thread if m.is_active), None)
    # documents the agent cannot find yet (just uploaded, or a fresh install's handbook): said before anyone asks
    indexing = agents_documents_being_indexed([conversation.agent])[conversation.agent.pk]
    return render(
        request,
        "conversations/chat.html",
        {"conversation": conversation, "thread": thread, "active": active, "indexing": indexing, **_sidebar(request)},
    )


@login_required
@require_POST
def message_send(request: HttpRequest, conversation_id: str) -> HttpResponse:
    """A message with optional attached files (multipart). The page script asks for JSON and then follows
    the run over the websocket; without JavaScript the browser is redirected back to the chat."""
    conversation = _conversation_or_404(request, conversation_id)
    wants_json = "application/json" in request.headers.get("Accept", "")
    try:
        user_message, assistant = conversation_message_send(
            conversation=conversation,
            user=request.user,
            content=request.POST.get("content", ""),
            uploads=request.FILES.getlist("files"),
        )
    except ApplicationError as exc:
        if wants_json:
            return JsonResponse({"error": {"code": exc.code, "message": exc.message}}, status=exc.status)
        flash.error(request, exc.message)
        return redirect("chat", conversation_id=conversation.pk)
    if wants_json:
        html = render_to_string("conversations/_message.html", {"message": user_message}, request=request)
        return JsonResponse(
            {"user_message_html": html, "assistant_message_id": assistant.pk, "run_id": str(assistant.run_id)}
        )
    return redirect("chat", conversation_id=conversation.pk)


@login_required
@require_POST
def conversation_edit(request: HttpRequest, conversation_id: str) -> HttpResponse:
    conversation = _conversation_or_404(request, conversation_id)
    action = request.POST.get("action")
    if action == "rename":
        conversation_update(conversation=conversation, title=request.POST.get("title", ""))
    elif action in ("archive", "restore"):
        conversation_update(conversation=conversation, archived=action == "archive")
        if action == "archive":
            return redirect("home")
    elif action == "delete":
        conversation_delete(conversation=conversation)
        flash.success(request, "Conversation deleted.")
        return redirect("home")
    else:
        flash.error(request, "Unknown action.")
    return redirect("chat", conversation_id=conversation.pk)


@require_GET
async def run_events(request: HttpRequest, conversation_id: str, run_id: str) -> StreamingHttpResponse:
    """A turn's events as server-sent events (resume with Last-Event-ID or ?after=)."""
    user = await request.auser()
    tenant = request.tenant

    def allowed() -> bool:
        conversation = conversation_get_for_user(conversation_id=conversation_id, user=user)
        return conversation is not None and conversation.messages.filter(run_id=run_id).exists()

    try:
        uuid.UUID(run_id)
    except ValueError:
        raise Http404("No such run.") from None
    if not user.is_authenticated or not await run_in_tenant(tenant, allowed):
        raise Http404("No such run.")
    after = request.headers.get("Last-Event-ID") or request.GET.get("after") or "0"
    after_seq = int(after) if after.isdigit() else 0
    response = StreamingHttpResponse(
        run_events_sse(tenant.schema_name, run_id, after_seq), content_type="text/event-stream"
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@login_required
@require_POST
def message_rate(request: HttpRequest, message_id: int) -> HttpResponse:
    message = message_get_for_user(message_id=message_id, user=request.user)
    if message is None:
        raise Http404("No such message.")
    try:
        message_feedback(
            message=message, value=request.POST.get("feedback", ""), comment=request.POST.get("comment", "")
        )
    except ApplicationError as exc:
        flash.error(request, exc.message)
    if request.headers.get("Accept") == "application/json":
        return HttpResponse(status=204)
    return redirect("chat", conversation_id=message.conversation_id)
