"""OpenAI-compatible routes under /v1/ (see api/openai_apis.py)."""

urlpatterns: list = []
