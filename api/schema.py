"""OpenAPI extras: the API key security scheme (so Swagger UI's "Authorize" works) and the one error format,
listed on every operation for the errors any of them can answer."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "example": "invalid"},
                "message": {"type": "string"},
                "fields": {
                    "type": "object",
                    "additionalProperties": {"type": "array", "items": {"type": "string"}},
                    "description": "Per field, what is wrong with it (validation errors only)",
                },
            },
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}
COMMON_ERRORS = {
    "400": "Invalid input: `fields` names each bad field",
    "401": "No API key, or an invalid, expired or revoked one",
    "403": "The key lacks the scope this needs, or the organisation is suspended",
    "404": "Nothing with this id here (also for another organisation's ids)",
    "429": "Too many requests, or the month's token budget is used up: see Retry-After",
}


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.ApiKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "nxk_…",
            "description": "An API key of this organisation (admin → API keys, or `manage.py apikey_create`).",
        }


class SessionScheme(OpenApiAuthenticationExtension):
    target_class = "api.authentication.SessionAuthentication"
    name = "session"

    def get_security_definition(self, auto_schema: Any) -> dict:
        return {"type": "apiKey", "in": "cookie", "name": "nexent_session"}


def add_error_responses(result: dict, generator: Any, request: Any, public: bool) -> dict:
    """drf-spectacular postprocessing hook: the Error component, referenced by every operation's 4xx."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    for methods in result.get("paths", {}).values():
        for operation in methods.values():
            responses = operation.setdefault("responses", {})
            for status, description in COMMON_ERRORS.items():
                responses.setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                    },
                )
    return result
