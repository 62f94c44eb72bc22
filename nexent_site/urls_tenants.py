"""URLs of every tenant domain (`<slug>.<base domain>`), served in that tenant's schema."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from nexent_site.admin_sites import tenant_admin_site

urlpatterns = [
    path("", include("api.urls")),  # first: most requests are API calls (only /api/ and /v1/ paths in it)
    path("", include("conversations.urls")),
    path("", include("files.urls")),
    path("", include("knowledge.urls")),
    path("admin/", tenant_admin_site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("i18n/", include("django.conf.urls.i18n")),
]

handler404 = "tenants.views.page_not_found"
