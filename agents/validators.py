import re
from typing import Any
from urllib.parse import urlparse

from django.core.exceptions import ValidationError

AGENT_SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,48}[a-z0-9])?$")
HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9-]{1,100}$")


def validate_agent_slug(value: str) -> None:
    if not AGENT_SLUG_RE.match(value or ""):
        raise ValidationError("Use lowercase letters, digits and hyphens (it is the agent's id in URLs and APIs).")


def validate_base_url(value: str) -> None:
    try:
        parsed = urlparse(value or "")
        hostname = parsed.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        hostname = None
    if not hostname or parsed.scheme not in ("http", "https"):
        raise ValidationError("Enter an http:// or https:// URL, e.g. https://api.openai.com/v1")
    if parsed.username or parsed.password:
        raise ValidationError("Put credentials in the API key field, not in the URL.")


def validate_headers(value: Any) -> None:
    if not isinstance(value, dict):
        raise ValidationError('Headers must be a JSON object like {"X-Org": "acme"}.')
    for name, header in value.items():
        if not HEADER_NAME_RE.match(str(name)) or not isinstance(header, str) or "\n" in header or "\r" in header:
            raise ValidationError(f"Invalid header {name!r}: names are letters, digits and hyphens; values are text.")
