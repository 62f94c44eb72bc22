"""Domain errors and their one-line rendering for shells."""

from django.core.exceptions import ValidationError


class ApplicationError(Exception):
    """A domain failure with a stable code, mapped once to HTTP, websocket and command-line errors."""

    def __init__(self, message: str, *, code: str = "error", status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status


def format_validation_error(exc: ValidationError) -> str:
    """`field: message; field: message` for command-line output."""
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{field}: {' '.join(messages)}" for field, messages in exc.message_dict.items())
    return " ".join(exc.messages)
