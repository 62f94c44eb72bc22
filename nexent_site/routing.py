"""Websocket routes. Every route sits behind `TenantWebsocketMiddleware` (see asgi.py)."""

from django.urls import path

from agents.consumers import RunEventsConsumer
from conversations.consumers import ChatConsumer
from knowledge.consumers import KnowledgeProgressConsumer
from tenants.consumers import SessionStatusConsumer

websocket_urlpatterns = [
    path("ws/status/", SessionStatusConsumer.as_asgi()),
    path("ws/runs/<str:run_id>/", RunEventsConsumer.as_asgi()),
    path("ws/chat/<str:conversation_id>/", ChatConsumer.as_asgi()),
    path("ws/knowledge/<str:kb_id>/", KnowledgeProgressConsumer.as_asgi()),
]
