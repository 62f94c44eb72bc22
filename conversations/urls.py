from django.urls import path

from conversations import views

urlpatterns = [
    path("", views.home, name="home"),
    path("chat/new/", views.conversation_new, name="chat_new"),
    path("chat/<str:conversation_id>/", views.chat, name="chat"),
    path("chat/<str:conversation_id>/send/", views.message_send, name="chat_send"),
    path("chat/<str:conversation_id>/edit/", views.conversation_edit, name="chat_edit"),
    path("chat/<str:conversation_id>/runs/<str:run_id>/events/", views.run_events, name="chat_run_events"),
    path("messages/<int:message_id>/feedback/", views.message_rate, name="message_feedback"),
]
