"""URLs of the platform's base domain (the `public` schema): landing page and platform admin."""

from django.urls import include, path

from nexent_site.admin_sites import platform_admin_site
from tenants import views

urlpatterns = [
    path("", views.landing, name="home"),
    path("admin/", platform_admin_site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
]
