"""REST API routes of this app, under /api/v1/ (see api/urls.py)."""

from rest_framework.routers import SimpleRouter

from agents import apis

router = SimpleRouter()
router.register("agents", apis.AgentViewSet, basename="api-agent")
router.register("providers", apis.ProviderViewSet, basename="api-provider")
router.register("runs", apis.RunViewSet, basename="api-run")

urlpatterns = router.urls
