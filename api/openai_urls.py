"""OpenAI-compatible routes under /v1/ (see api/openai_apis.py). No trailing slashes: OpenAI clients call
`/v1/models` and `/v1/chat/completions`."""

from django.urls import path, re_path

from api import openai_apis

urlpatterns = [
    path("models", openai_apis.models, name="openai-models"),
    path("models/<str:model_id>", openai_apis.model, name="openai-model"),
    path("chat/completions", openai_apis.chat_completions, name="openai-chat-completions"),
    re_path(r"", openai_apis.unknown_endpoint),
]
