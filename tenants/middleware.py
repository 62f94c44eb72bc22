from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

API_PREFIXES = ("/api/", "/v1/", "/mcp/")


def wants_json(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIXES) or "application/json" in request.headers.get("Accept", "")


class SuspendedTenantMiddleware:
    """After tenant resolution: a suspended tenant's pages, admin and API all answer 403, data untouched."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        tenant = getattr(request, "tenant", None)
        if tenant is None or tenant.is_platform or tenant.is_active:
            return self.get_response(request)
        message = f"The organisation “{tenant.name}” is suspended. Contact the platform administrator."
        if wants_json(request):
            error = {"code": "tenant_suspended", "message": message}
            if request.path.startswith("/v1/"):  # OpenAI's error format there
                error |= {"type": "permission_error", "param": None}
            return JsonResponse({"error": error}, status=403)
        return render(request, "tenants/suspended.html", {"tenant": tenant, "message": message}, status=403)
