"""REST API routes of this app, under /api/v1/ (see api/urls.py)."""

from rest_framework.routers import SimpleRouter

from conversations import apis

router = SimpleRouter()
router.register("conversations", apis.ConversationViewSet, basename="api-conversation")
router.register(r"conversations/(?P<conversation_id>[^/.]+)/messages", apis.MessageViewSet, basename="api-message")

urlpatterns = router.urls
