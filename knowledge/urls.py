from django.urls import path

from knowledge import views

urlpatterns = [
    path("sources/<str:document_id>/", views.document_source, name="knowledge_source"),
]
