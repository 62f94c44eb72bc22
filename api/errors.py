"""One error format for the REST API: `{"error": {"code", "message", "fields"}}` (`fields` maps field names
to messages, for validation errors). Domain errors (ApplicationError), Django's ValidationError and DRF's own
exceptions all end up here."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import RequestDataTooBig, ValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from nexent_site.errors import ApplicationError


def error_body(code: str, message: str, fields: dict | None = None) -> dict:
    body: dict[str, Any] = {"code": code, "message": message}
    if fields:
        body["fields"] = fields
    return {"error": body}


def _text(value: Any) -> str:
    # Messages and field names may quote the request; a lone surrogate there cannot be encoded as UTF-8.
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


def _flatten(detail: Any) -> Any:
    """DRF's nested ErrorDetail lists → plain strings (one string per field where it can)."""
    if isinstance(detail, dict):
        return {_text(key): _flatten(value) for key, value in detail.items()}
    if isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            return [_text(item) for item in detail]
        return [_flatten(item) for item in detail]
    return _text(detail)


def _validation_response(detail: Any) -> Response:
    if isinstance(detail, dict):
        fields = _flatten(detail)
        general = fields.pop("non_field_errors", None) or fields.pop("__all__", None)
        if general:
            message = " ".join(general) if isinstance(general, list) else str(general)
        else:
            message = "Some fields are not valid: " + ", ".join(fields) + "."
        return Response(error_body("invalid", message, fields), status=status.HTTP_400_BAD_REQUEST)
    messages = _flatten(detail if isinstance(detail, list) else [detail])
    return Response(error_body("invalid", " ".join(map(str, messages))), status=status.HTTP_400_BAD_REQUEST)


def exception_handler(exc: Exception, context: dict) -> Response | None:
    if isinstance(exc, ApplicationError):
        headers = {"Retry-After": str(exc.retry_after)} if getattr(exc, "retry_after", None) else None
        return Response(error_body(exc.code, exc.message), status=exc.status, headers=headers)
    if isinstance(exc, ValidationError):
        return _validation_response(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("request_too_large", "The request body is too large."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, exceptions.ValidationError):
        return _validation_response(exc.detail)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        message = str(exc.detail) if not isinstance(exc.detail, (dict, list)) else str(_flatten(exc.detail))
        if isinstance(exc, exceptions.ParseError):
            code = "malformed_request"
        if isinstance(exc, exceptions.Throttled):
            code, message = "rate_limited", f"Too many requests; try again in {exc.wait or 1:.0f} s."
        response.data = error_body(code, message)
    return response
