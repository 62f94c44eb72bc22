"""REST API routes of this app, under /api/v1/ (see api/urls.py)."""

from rest_framework.routers import SimpleRouter

from files import apis

router = SimpleRouter()
router.register("files", apis.FileViewSet, basename="api-file")

urlpatterns = router.urls
