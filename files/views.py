from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest
from django.views.decorators.http import require_GET

from files.models import StoredFile
from files.selectors import file_get_for_user
from files.services import file_from_signed_token, file_open


def _download(stored_file: StoredFile) -> FileResponse:
    response = FileResponse(
        file_open(stored_file),
        as_attachment=True,
        filename=stored_file.original_name,
        content_type=stored_file.content_type,
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, no-store"
    return response


@login_required
@require_GET
def download(request: HttpRequest, file_id: str) -> FileResponse:
    stored_file = file_get_for_user(file_id=file_id, user=request.user)
    if stored_file is None:
        raise Http404("No such file.")
    return _download(stored_file)


@require_GET
def signed_download(request: HttpRequest, token: str) -> FileResponse:
    stored_file = file_from_signed_token(token)
    if stored_file is None:
        raise Http404("This link is invalid or has expired.")
    return _download(stored_file)
