from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from tenants.middleware import wants_json


@require_GET
def landing(request: HttpRequest) -> HttpResponse:
    """The platform's public page on the base domain."""
    return render(request, "public/landing.html")


def unknown_host(request: HttpRequest) -> HttpResponse:
    """No tenant serves this host name: a plain 404, never a stack trace, and no hint of which tenants exist."""
    host = request.get_host().split(":")[0]
    if wants_json(request):
        return JsonResponse({"error": {"code": "unknown_host", "message": f"No organisation at {host}."}}, status=404)
    return render(request, "tenants/unknown_host.html", {"host": host}, status=404)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404s: in the API's error format under /api/, /v1/ and /mcp/ (and for JSON clients), else Django's page."""
    if wants_json(request):
        message = f"Nothing at {request.path}."
        return JsonResponse({"error": {"code": "not_found", "message": message}}, status=404)
    from django.views.defaults import page_not_found as default

    return default(request, exception)
