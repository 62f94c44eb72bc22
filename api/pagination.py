"""Page-number pagination that refuses bad parameters with a 400 naming them, instead of guessing."""

from __future__ import annotations

from typing import Any

from rest_framework import pagination
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request


class PageNumberPagination(pagination.PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 100

    def _positive(self, request: Request, name: str, maximum: int | None = None) -> None:
        value = request.query_params.get(name)
        if value is None:
            return
        if not value.isdigit() or int(value) < 1:
            raise ValidationError({name: [f"{name} must be a whole number of at least 1."]})
        if maximum is not None and int(value) > maximum:
            raise ValidationError({name: [f"{name} can be at most {maximum}."]})

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> Any:
        self._positive(request, self.page_query_param)
        self._positive(request, self.page_size_query_param, self.max_page_size)
        try:
            return super().paginate_queryset(queryset, request, view)
        except NotFound:
            raise ValidationError({self.page_query_param: ["That page is past the last one."]}) from None
