"""REST API routes of this app, under /api/v1/ (see api/urls.py)."""

from django.urls import path
from rest_framework.routers import SimpleRouter

from knowledge import apis

router = SimpleRouter()
router.register("knowledge-bases", apis.KnowledgeBaseViewSet, basename="api-knowledge-base")
router.register(r"knowledge-bases/(?P<kb_id>\d+)/documents", apis.DocumentViewSet, basename="api-document")

urlpatterns = [
    path("search/", apis.KnowledgeSearchView.as_view(), name="api-knowledge-search"),
    *router.urls,
]
