from django.urls import path

from files import views

urlpatterns = [
    path("files/<str:file_id>/download/", views.download, name="file_download"),
    path("files/signed/<str:token>/", views.signed_download, name="file_signed"),
]
