"""REST API routes of this app, under /api/v1/ (see api/urls.py)."""

urlpatterns: list = []
